"""Work that must wait for the current transaction to commit, the connection it needs, and
work that runs beside it on a connection of its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import update_wrapper
from typing import Any, TypeVar

from django.db import connection, connections, transaction

T = TypeVar("T")


def after_commit(func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call ``func(*args, **kwargs)`` once the transaction commits; log a failure, never raise.

    Not a functools.partial: Django names the callable when it logs a failure, and a
    partial, having no name, turns that into an error of its own.
    """
    transaction.on_commit(update_wrapper(lambda: func(*args, **kwargs), func), robust=True)


def connection_give_back() -> None:
    """Return this thread's database connections (the primary's, and a read replica's)
    to their pools before waiting on something.

    A request that waits (on a model, or on another request writing what it needs)
    would otherwise keep one of its process's few pooled connections idle meanwhile, and
    if what it waits for needs a connection too, the two can wait on each other until
    the pool times out. The next query takes a connection again. Inside a transaction
    the connection stays: the transaction needs it.
    """
    for each in connections.all(initialized_only=True):
        if not each.in_atomic_block:
            each.close()


# Threads for work that runs beside a request's own (one search's two rankings): each
# borrows a pooled connection for its call. Per process, as threads do not survive a fork.
_ALONGSIDE_THREADS = 4
_alongside: tuple[int, ThreadPoolExecutor] | None = None
_alongside_lock = threading.Lock()


def _on_own_connection(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)
    finally:
        connections.close_all()  # back to the pool


def alongside(func: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Start ``func(*args, **kwargs)`` in another thread, on a connection of its own.

    Inside a transaction it runs here and now instead (and raises here, if it fails):
    another connection would not see what the transaction wrote. The caller must hand
    its own connection back (``connection_give_back``) before it waits on the result,
    so that no thread ever holds a pooled connection while it waits for another.
    """
    if connection.in_atomic_block:
        done: Future[T] = Future()
        done.set_result(func(*args, **kwargs))  # an error is raised here, as it happens
        return done
    global _alongside
    with _alongside_lock:
        if _alongside is None or _alongside[0] != os.getpid():
            _alongside = (os.getpid(), ThreadPoolExecutor(
                max_workers=_ALONGSIDE_THREADS, thread_name_prefix="alongside"))
        executor = _alongside[1]
    return executor.submit(_on_own_connection, func, *args, **kwargs)
