"""The database backend's pool: lends a sound connection without a round trip."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from aistack.postgresql.base import check_without_round_trip

pytestmark = pytest.mark.django_db(transaction=True)


def connect() -> psycopg.Connection[Any]:
    params = {**connection.get_connection_params(), "autocommit": True}
    return psycopg.connect(**params)


def last_query(watcher: psycopg.Connection[Any], pid: int) -> str:
    found = watcher.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
    return str(found.fetchone()[0])  # type: ignore[index]


def test_a_sound_connection_is_lent_without_a_query() -> None:
    with connect() as lent, connect() as watcher:
        lent.execute("SELECT 'the last thing it ran'")
        check_without_round_trip(lent)
        assert last_query(watcher, lent.info.backend_pid) == "SELECT 'the last thing it ran'"
        # What Django's pool runs instead: a round trip, which the server sees.
        ConnectionPool.check_connection(lent)
        assert last_query(watcher, lent.info.backend_pid) == ""


def test_a_connection_the_server_closed_fails_the_check() -> None:
    with connect() as lent, connect() as watcher:
        watcher.execute("SELECT pg_terminate_backend(%s)", [lent.info.backend_pid])
        with connect() as other:  # the terminated backend is gone once this sees it
            while other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                [lent.info.backend_pid]).fetchone() != (0,):
                time.sleep(0.01)
        with pytest.raises(psycopg.OperationalError):
            check_without_round_trip(lent)


def test_requests_get_a_working_connection_soon_after_every_one_was_terminated() -> None:
    """As after a database restart: every connection the pool holds is broken."""
    pool = connection.pool
    assert pool is not None
    # The pool holds as many connections as it may (requests in threads at once).
    barrier = threading.Barrier(pool.max_size)

    def query() -> None:
        barrier.wait()
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.2)")
        connections.close_all()

    threads = [threading.Thread(target=query) for _ in range(pool.max_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert pool.get_stats()["pool_available"] == pool.max_size
    with connect() as watcher:
        watcher.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        time.sleep(0.2)

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    # One pause (about 1 s) before a new connection, not one per broken connection.
    assert time.monotonic() - started < 2.5
    assert connection.settings_dict["ENGINE"] == "aistack.postgresql"


def test_server_side_binding_is_refused_with_a_reason() -> None:
    # dj_database_url turns ?server_side_binding=true into this option.
    settings = {**connection.settings_dict,
                "OPTIONS": {**connection.settings_dict["OPTIONS"], "server_side_binding": True}}
    wrapper = type(connections["default"])(settings, alias="bound")

    with pytest.raises(ImproperlyConfigured, match="server_side_binding is not supported"):
        wrapper.get_connection_params()


def test_a_bound_cursor_shares_the_transaction_and_raises_djangos_errors() -> None:
    from django.db import IntegrityError, transaction

    from aistack.postgresql.binding import bound_cursor

    texts = ["it's", 'a "quoted"\\ text', "{braces,commas}", "NULL", "", "\u00e9t\u00e9"]
    with transaction.atomic():
        with connection.cursor() as cursor:  # rolled back at the end, table and all
            cursor.execute("CREATE TEMPORARY TABLE bound (n bigint PRIMARY KEY, t text, b bytea)")
        with bound_cursor() as bound:
            # Arrays in binary: every element comes back as written, none of it parsed.
            bound.execute("INSERT INTO bound SELECT * FROM unnest(%b::bigint[], %b::text[], "
                          "%b::bytea[])", [[n * 2**40 for n in range(len(texts))], texts,
                                           [text.encode() + b"\x00\xff" for text in texts]])
            bound.execute("INSERT INTO bound SELECT * FROM unnest(%b::bigint[], %b::text[], "
                          "%b::bytea[])", [[], [], []])  # nothing, not an error
        with connection.cursor() as cursor:  # Django's cursor sees the uncommitted rows
            cursor.execute("SELECT n, t, b FROM bound ORDER BY n")
            assert [(n, t, bytes(b)) for n, t, b in cursor.fetchall()] == [
                (n * 2**40, text, text.encode() + b"\x00\xff") for n, text in enumerate(texts)]
        with pytest.raises(IntegrityError), transaction.atomic(), bound_cursor() as bound:
            bound.execute("INSERT INTO bound VALUES (%s, 'again', NULL)", [0])
        with bound_cursor() as bound:  # the savepoint rolled back: the transaction goes on
            bound.execute("SELECT count(*) FROM bound")
            assert bound.fetchone() == (len(texts),)
        transaction.set_rollback(True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.bound')")
        assert cursor.fetchone() == (None,)
