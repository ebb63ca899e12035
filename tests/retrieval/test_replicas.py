"""Search on a real streaming replica, made with the embedded PostgreSQL's own binaries
(pg_basebackup, then a standby server): served from it once it has replayed the
workspace's changes, from the primary until then, and from the primary when it is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from aistack import replicas
from aistack.retrieval.selectors import SearchMode
from aistack.retrieval.services import search
from aistack.usage.types import Attribution
from harness.standby import Standby
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

ALIAS = "replica_test"


def replica_settings(server: Standby) -> dict[str, Any]:
    """Connection settings as aistack.settings makes them for DATABASE_REPLICA_URLS."""
    options = dict(connection.settings_dict["OPTIONS"])
    options.update({"connect_timeout": 1, "pool": {**options["pool"], "min_size": 0,
                                                   "timeout": 1}})
    return {**connection.settings_dict, "HOST": str(server.sockets), "PORT": str(server.port),
            "OPTIONS": options, "TEST": {"MIRROR": None}}


@pytest.fixture
def standby(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Standby]:
    # Outside pytest's temporary directories, which the server's own user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="aistack-replica-"))
    primary = connection.settings_dict
    server = Standby(root, host=primary["HOST"], port=int(primary["PORT"] or 5432),
                     user=primary["USER"] or "postgres")
    # Added now, not in settings: the test case would flush it (it is read only).
    connections.settings[ALIAS] = replica_settings(server)
    settings.DATABASE_REPLICAS = [ALIAS]
    # The test case refuses connections to databases it does not flush (in the search's
    # second thread too); this one it must not flush: it is read only.
    guarded = BaseDatabaseWrapper.ensure_connection

    def ensure_connection(wrapper: BaseDatabaseWrapper) -> None:
        if wrapper.alias != ALIAS:
            return guarded(wrapper)
        if wrapper.connection is None:
            with wrapper.wrap_database_errors:
                wrapper.connect()
        return None

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", ensure_connection)
    replicas._down.clear()
    try:
        yield server
    finally:
        connections[ALIAS].close()
        connections[ALIAS].close_pool()  # pools are kept by alias, beyond the wrapper
        del connections[ALIAS]
        del connections.settings[ALIAS]
        replicas._down.clear()
        if server.running():
            server.stop()
        if os.environ.get("KEEP_REPLICA") is None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def served_from() -> Iterator[Callable[[], list[str]]]:
    """Record which database each search statement runs on in this thread (the ranking
    and the hits; a hybrid search's text ranking runs in another)."""
    seen: list[str] = []

    def wrapper(alias: str) -> Callable[..., Any]:
        def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
            if "retrieval_chunk" in sql or "retrieval_postinglist" in sql:
                seen.append(alias)
            return execute(sql, *args)
        return record

    added = {alias: wrapper(alias) for alias in ("default", ALIAS)}
    for alias, record in added.items():
        connections[alias].execute_wrappers.append(record)
    try:
        yield lambda: seen
    finally:
        for alias, record in added.items():
            if alias in connections.settings:
                connections[alias].execute_wrappers.remove(record)


def searched(user: User, query: str, mode: SearchMode = SearchMode.HYBRID) -> list[int]:
    hits = search(workspace_ids=[user.personal_workspace.pk], query=query, k=5,
                  mode=mode, attribution=Attribution(feature="search"))
    return [hit.document_id for hit in hits]


def replayed(standby: Standby) -> Callable[[], bool]:
    def check() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            primary = cursor.fetchone()[0]
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [primary])
            return bool(cursor.fetchone()[0])
    return check


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_search_reads_the_replica_once_it_has_replayed_the_workspaces_changes(
    standby: Standby, alice: User, clean_redis: None, served_from: Callable[[], list[str]],
) -> None:
    seen = served_from
    first = indexed(alice.personal_workspace, alice, "Ferries",
                    "The harbour ferry leaves at dawn from the north pier.")
    wait_for(replayed(standby))
    seen().clear()

    assert searched(alice, "harbour ferry") == [first.pk]
    assert set(seen()) == {ALIAS}
    seen().clear()
    assert searched(alice, "harbour ferry", SearchMode.TEXT) == [first.pk]
    assert set(seen()) == {ALIAS}  # the text index's lists, read in this thread

    # Replay paused: a document indexed now is on the primary alone, and searches go
    # there until the replica has it.
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
    second = indexed(alice.personal_workspace, alice, "Ferry fares",
                     "A harbour ferry ticket costs four euros at the pier.")
    seen().clear()
    assert set(searched(alice, "harbour ferry")) == {first.pk, second.pk}
    assert set(seen()) == {"default"}

    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_resume()")
    wait_for(replayed(standby))
    seen().clear()
    assert set(searched(alice, "harbour ferry")) == {first.pk, second.pk}
    assert set(seen()) == {ALIAS}


def test_a_replica_gone_leaves_search_to_the_primary_without_an_error(
    standby: Standby, alice: User, clean_redis: None, served_from: Callable[[], list[str]],
) -> None:
    document = indexed(alice.personal_workspace, alice, "Lighthouse",
                       "The lighthouse keeper logs every passing ship.")
    wait_for(replayed(standby))
    assert searched(alice, "lighthouse keeper") == [document.pk]  # a pooled connection now

    standby.stop()
    seen = served_from

    assert searched(alice, "lighthouse keeper") == [document.pk]
    assert replicas._is_down(ALIAS)
    seen().clear()
    assert searched(alice, "lighthouse keeper") == [document.pk]
    assert set(seen()) == {"default"}  # left alone for a while: no time lost on it


def test_without_redis_nothing_is_known_of_recent_writes_and_the_primary_serves(
    standby: Standby, alice: User, clean_redis: None, monkeypatch: pytest.MonkeyPatch,
    served_from: Callable[[], list[str]],
) -> None:
    document = indexed(alice.personal_workspace, alice, "Lighthouse",
                       "The lighthouse keeper logs every passing ship.")
    wait_for(replayed(standby))

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        raise RedisConnectionError("down")

    monkeypatch.setattr(replicas, "redis_client", unreachable)
    seen = served_from
    seen().clear()

    assert searched(alice, "lighthouse keeper") == [document.pk]
    assert set(seen()) == {"default"}


def test_while_a_change_commits_the_workspaces_searches_read_the_primary(
    standby: Standby, alice: User, clean_redis: None, served_from: Callable[[], list[str]],
) -> None:
    """Between an index change's commit and the record of its position, a status read
    from the primary already says "indexed": the replica must not be read then."""
    document = indexed(alice.personal_workspace, alice, "Lighthouse",
                       "The lighthouse keeper logs every passing ship.")
    wait_for(replayed(standby))
    workspace = [alice.personal_workspace.pk]

    replicas.workspaces_writing(workspace)
    served_from().clear()
    assert searched(alice, "lighthouse keeper", SearchMode.TEXT) == [document.pk]
    assert set(served_from()) == {"default"}

    replicas.workspaces_written(workspace)
    wait_for(replayed(standby))
    served_from().clear()
    assert searched(alice, "lighthouse keeper", SearchMode.TEXT) == [document.pk]
    assert set(served_from()) == {ALIAS}
