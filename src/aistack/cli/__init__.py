"""The ``aistack`` command line: one group, its commands in a module per concern."""

from aistack.cli import knowledge, manage, processes
from aistack.cli.base import in_child, main

__all__ = ["in_child", "knowledge", "main", "manage", "processes"]
