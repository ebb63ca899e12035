"""Work that must wait for the current transaction to commit."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.db import transaction


def after_commit(func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call ``func(*args, **kwargs)`` once the transaction commits; log a failure, never raise.

    Not a functools.partial: Django names the callable when it logs a failure, and a
    partial, having no name, turns that into an error of its own.
    """
    transaction.on_commit(update_wrapper(lambda: func(*args, **kwargs), func), robust=True)
