"""Statements whose parameters travel apart from them: large arrays written cheaply.

Django binds parameters on the client: each one is spelled into the statement's text,
which for an array of thousands of strings or byte strings is a Python loop quoting every
element, then a long statement for the server to parse. A cursor binding on the server
sends them as parameters, arrays in PostgreSQL's binary form, and can ``COPY`` rows in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def bound_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator[psycopg.Cursor[Any]]:
    """Yield a cursor on Django's connection (its transaction too) that binds parameters
    on the server; its errors are Django's database errors, as any cursor's."""
    wrapper = connections[using]
    # What Django checks before any statement: a transaction it will roll back takes no
    # more, and a connection stays with its thread.
    wrapper.validate_no_broken_transaction()
    wrapper.validate_thread_sharing()
    wrapper.ensure_connection()
    with wrapper.wrap_database_errors, psycopg.Cursor(wrapper.connection) as cursor:
        yield cursor
