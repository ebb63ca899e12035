"""Search on read replicas (``DATABASE_REPLICA_URLS``), never behind what was written.

Writes and every other read go to the primary. A search may go to a streaming replica,
but only to one that has replayed every change to the searched workspaces' index:
whoever changes the index (every process, replicas configured or not) records the
primary's WAL position per workspace in Redis once the change commits
(``workspaces_written``), and a search asks the replica for its replay position before
using it (one round trip). So a
document is found from a replica as soon as its index job's commit is replayed there,
and from the primary until then; a deleted one is never found again.

A replica that fails (it stopped, or its connection broke) is left alone for
DOWN_SECONDS and the search runs on the primary without an error. Without Redis nothing
is known of recent writes, and searches go to the primary.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from redis.exceptions import RedisError

from aistack.redis.connections import redis_client

logger = logging.getLogger(__name__)

# How long a workspace's last write is remembered: far longer than any replica may lag
# (REPLAY_LAG_MAX_SECONDS; one that stopped receiving WAL is never used).
WRITTEN_TTL_SECONDS = 24 * 3600
REPLAY_LAG_MAX_SECONDS = 30
DOWN_SECONDS = 10.0
_KEY = "aistack:replicas:written:{}"
# Set before a change commits, cleared once its position is recorded: between the two,
# the workspace's searches read the primary (a rollback leaves it for PENDING_SECONDS).
_PENDING = "aistack:replicas:pending:{}"
PENDING_SECONDS = 30
# A change every search depends on (search switched to another embedding model).
_EVERYTHING = "all"
# Keeps the higher of the stored and the given position (commits of two processes may
# record theirs in either order).
_RAISE = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
"""

_down: dict[str, float] = {}
_down_lock = threading.Lock()


def replica_aliases() -> list[str]:
    """Return the database aliases of the configured read replicas."""
    return list(getattr(settings, "DATABASE_REPLICAS", ()))


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def workspaces_writing(workspace_ids: Sequence[int]) -> None:
    """Say that the workspaces' index is changing in a transaction not yet committed
    (then ``workspaces_written`` once it has). Never raises."""
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for workspace_id in set(workspace_ids):
                pipe.set(_PENDING.format(int(workspace_id)), 1, ex=PENDING_SECONDS)
            pipe.execute()
    except RedisError as exc:
        logger.warning("could not record a write for the read replicas: %s", exc)


def workspaces_written(workspace_ids: Sequence[int]) -> None:
    """Record that the workspaces' index changed up to the primary's position now (run
    once the change committed). Never raises."""
    if workspace_ids:
        ids = {int(workspace_id) for workspace_id in workspace_ids}
        _written([_KEY.format(w) for w in ids], done=[_PENDING.format(w) for w in ids])


def everything_written() -> None:
    """Record a change every search depends on, like ``workspaces_written``."""
    _written([_KEY.format(_EVERYTHING)])


def _written(keys: list[str], done: Sequence[str] = ()) -> None:
    # Whether or not this process reads replicas: the workers that index are the writers
    # the web processes that search must wait for.
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            position = _lsn(cursor.fetchone()[0])
        client = redis_client()
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.eval(_RAISE, 1, key, position, WRITTEN_TTL_SECONDS)
            if done:
                pipe.delete(*done)
            pipe.execute()
    except (RedisError, DatabaseError) as exc:
        # Searches then find no record for these workspaces in Redis, or an older one:
        # with Redis down they use the primary; a record lost alone is the window below.
        logger.warning("could not record a write for the read replicas: %s", exc)


def search_database(workspace_ids: Sequence[int]) -> str:
    """Return the alias to search the workspaces on: a replica that is up and has
    replayed their last recorded change, else the primary."""
    replicas = [alias for alias in replica_aliases() if not _is_down(alias)]
    if not replicas or not workspace_ids:
        return DEFAULT_DB_ALIAS
    ids = {int(w) for w in workspace_ids}
    try:
        found = redis_client().mget([*(_PENDING.format(w) for w in ids),
                                     _KEY.format(_EVERYTHING), *(_KEY.format(w) for w in ids)])
    except RedisError:
        return DEFAULT_DB_ALIAS
    if any(found[:len(ids)]):  # a change is committing
        return DEFAULT_DB_ALIAS
    needed = max((int(value) for value in found[len(ids):] if value is not None), default=0)
    alias = random.choice(replicas)  # noqa: S311 (spreading load, not a secret)
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn() = "
                "pg_last_wal_replay_lsn(), extract(epoch FROM now() - "
                "pg_last_xact_replay_timestamp()), "
                "(SELECT status = 'streaming' FROM pg_stat_wal_receiver)")
            replayed, idle, lag, streaming = cursor.fetchone()
    except DatabaseError as exc:
        replica_failed(alias, exc)
        return DEFAULT_DB_ALIAS
    if replayed is None:  # not a standby (promoted, or misconfigured): not ours to read
        return DEFAULT_DB_ALIAS
    # Cut off from the primary, a replica has replayed all it received and looks idle:
    # it must be streaming, and not far behind what it has received.
    behind = not streaming or (not idle and lag is not None and lag > REPLAY_LAG_MAX_SECONDS)
    return alias if _lsn(replayed) >= needed and not behind else DEFAULT_DB_ALIAS


def replica_failed(alias: str, exc: BaseException) -> None:
    """Leave the replica alone for DOWN_SECONDS, and its broken connection behind."""
    logger.warning("read replica %s failed (%s): searching the primary for %.0f s",
                   alias, exc, DOWN_SECONDS)
    with _down_lock:
        _down[alias] = time.monotonic() + DOWN_SECONDS
    with contextlib.suppress(DatabaseError):
        connections[alias].close()


def _is_down(alias: str) -> bool:
    with _down_lock:
        return _down.get(alias, 0.0) > time.monotonic()
