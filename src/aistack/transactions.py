"""Work that must wait for the current transaction to commit, and the connection it needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.db import connection, transaction


def after_commit(func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call ``func(*args, **kwargs)`` once the transaction commits; log a failure, never raise.

    Not a functools.partial: Django names the callable when it logs a failure, and a
    partial, having no name, turns that into an error of its own.
    """
    transaction.on_commit(update_wrapper(lambda: func(*args, **kwargs), func), robust=True)


def connection_give_back() -> None:
    """Return this thread's database connection to the pool before waiting on something.

    A request that waits (on a model, or on another request writing what it needs)
    would otherwise keep one of its process's few pooled connections idle meanwhile, and
    if what it waits for needs a connection too, the two can wait on each other until
    the pool times out. The next query takes a connection again. Inside a transaction
    the connection stays: the transaction needs it.
    """
    if not connection.in_atomic_block:
        connection.close()
