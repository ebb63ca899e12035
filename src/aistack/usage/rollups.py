"""Daily rollups of the ledger and of cache reads, kept up to date by a periodic job.

Each run sums in one PostgreSQL snapshot (repeatable read) and stores that snapshot. The
ledger rows the stored snapshot cannot see (by the writing transaction's id, which every
row keeps) are exactly the ones the rollups do not hold yet: the next run re-aggregates,
whole, only the days those rows fall on, so its cost follows the traffic since, not the
size of the ledger; and readers add those same rows to the rollups, so a report includes
every call committed before it was asked for (``aistack.usage.selectors``).

Latency percentiles: every rollup row keeps a sparse histogram of its calls'
latencies (and times to first token) over fixed buckets, each 10% wider than the
one before, from 1 ms to about 10 minutes. Histograms add up, so p50 and p95 over
any range and filter are read from the rollup, within a bucket's width (interpolated
inside it); a row holds only the buckets its calls fell in.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError, ResponseError

from aistack.redis.connections import redis_client
from aistack.usage.models import DailyUsage, DailyUserUsage, DailyWorkspaceUsage, RollupState
from aistack.usage.services import CACHE_COUNTS_KEY, cache_lookups_flush

logger = logging.getLogger(__name__)

LATENCY_BOUNDS_MS: tuple[int, ...] = tuple(sorted({round(1.1 ** n) for n in range(141)}))
_LOCK_ID = 7_301_001
_RUN_ATTEMPTS = 3
_FLUSHING_KEY = "aistack:usage:cache-flushing:{day}:{suffix}"

# Ledger rows the snapshot %(snapshot)s cannot see: committed after it was taken, or in
# flight then. Rows older than its xmin are all visible, so the index narrows the scan.
UNSEEN_BY_SNAPSHOT = """
    created_xact >= pg_snapshot_xmin(%(snapshot)s::pg_snapshot)::text::bigint
    AND NOT pg_visible_in_snapshot(created_xact::text::xid8, %(snapshot)s::pg_snapshot)
"""

_DAY_RANGE = """
    FROM usage_usagerecord WHERE created_at >= %(start)s AND created_at < %(end)s
"""


def _figures_sql(table: str, *, per_workspace: bool) -> str:
    """Return the INSERT that sums one day of the ledger into ``table``."""
    # 0 stands in for "no workspace" so that the keys join with plain equality. A call
    # shared by several workspaces is counted (and timed) once, at its first share; its
    # tokens and cost are in every share.
    key = "day, feature, model" + (", workspace_id" if per_workspace else "")
    return f"""
    WITH base AS MATERIALIZED (
        SELECT %(day)s::date AS day, feature, model, coalesce(workspace_id, 0) AS workspace_id,
               share_index = 0 AS counted,
               outcome, input_tokens, output_tokens, cached_tokens, cost_usd, latency_ms,
               width_bucket(latency_ms, %(bounds)s::int[]) AS latency_bucket,
               width_bucket(time_to_first_token_ms, %(bounds)s::int[]) AS ttft_bucket
        {_DAY_RANGE}
    ),
    by_latency AS (
        SELECT {key}, latency_bucket, count(*) FILTER (WHERE counted) AS calls,
               count(*) FILTER (WHERE counted AND outcome = 'error') AS errors,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd,
               coalesce(sum(latency_ms) FILTER (WHERE counted), 0) AS latency_ms
        FROM base GROUP BY {key}, latency_bucket
    ),
    totals AS (
        SELECT {key}, sum(calls) AS calls, sum(errors) AS errors,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd,
               sum(latency_ms) AS latency_ms,
               coalesce(jsonb_object_agg(latency_bucket, calls) FILTER (WHERE calls > 0),
                        '{{}}'::jsonb) AS latency_histogram
        FROM by_latency GROUP BY {key}
    ),
    ttft AS (
        SELECT {key}, sum(calls) AS calls, jsonb_object_agg(ttft_bucket, calls) AS histogram
        FROM (SELECT {key}, ttft_bucket, count(*) AS calls FROM base
              WHERE ttft_bucket IS NOT NULL AND counted GROUP BY {key}, ttft_bucket) per_bucket
        GROUP BY {key}
    )
    INSERT INTO {table} (day, feature, model, {"workspace_id, " if per_workspace else ""}calls,
                         errors, input_tokens, output_tokens, cached_tokens, cost_usd,
                         latency_ms_total, latency_histogram, ttft_calls, ttft_histogram)
    SELECT t.day, t.feature, t.model, {"nullif(t.workspace_id, 0), " if per_workspace else ""}
           t.calls, t.errors, t.input_tokens, t.output_tokens, t.cached_tokens, t.cost_usd,
           t.latency_ms, t.latency_histogram, coalesce(f.calls, 0),
           coalesce(f.histogram, '{{}}'::jsonb)
    FROM totals t LEFT JOIN ttft f USING ({key})
    """  # noqa: S608 - composed from constants of this module


_DAILY_USAGE_SQL = _figures_sql("usage_dailyusage", per_workspace=False)
_DAILY_WORKSPACE_USAGE_SQL = _figures_sql("usage_dailyworkspaceusage", per_workspace=True)
_DAILY_USER_USAGE_SQL = f"""
    INSERT INTO usage_dailyuserusage (day, user_id, workspace_id, calls, input_tokens,
                                      output_tokens, cost_usd)
    SELECT %(day)s, user_id, workspace_id, count(*) FILTER (WHERE share_index = 0),
           sum(input_tokens), sum(output_tokens), sum(cost_usd)
    {_DAY_RANGE}
    GROUP BY user_id, workspace_id
"""
_CACHE_COUNTS_SQL = """
    INSERT INTO usage_dailycacheusage (day, cache, feature, workspace_id, hits, misses)
    SELECT * FROM unnest(%(days)s::date[], %(caches)s::varchar[], %(features)s::varchar[],
                         %(workspaces)s::bigint[], %(hits)s::bigint[], %(misses)s::bigint[])
    ON CONFLICT (day, cache, feature, workspace_id) DO UPDATE
    SET hits = usage_dailycacheusage.hits + EXCLUDED.hits,
        misses = usage_dailycacheusage.misses + EXCLUDED.misses
"""


@contextlib.contextmanager
def one_snapshot(*, read_only: bool = False) -> Iterator[None]:
    """Run the block in one transaction whose every statement sees the same snapshot.

    Inside a transaction already open (a test's), the block joins it as it is.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
                               + (", READ ONLY" if read_only else ""))
        yield


@dataclass(frozen=True, kw_only=True)
class RollupRun:
    """What one rollup run did."""

    days: tuple[date, ...]
    cache_counts: int


def _touched_days(snapshot: str) -> list[date]:
    """Return the days of the ledger rows that ``snapshot`` (empty: every row) cannot see."""
    sql = "SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM usage_usagerecord"
    if snapshot:
        sql += f" WHERE {UNSEEN_BY_SNAPSHOT}"
    with connection.cursor() as cursor:
        cursor.execute(sql, {"snapshot": snapshot})
        return sorted(row[0] for row in cursor.fetchall())


def _day_aggregate(day: date) -> None:
    for rollup in (DailyUsage, DailyWorkspaceUsage, DailyUserUsage):
        rollup.objects.filter(day=day).delete()
    start = datetime.combine(day, time.min, tzinfo=UTC)
    params: dict[str, Any] = {"day": day, "start": start, "end": start + timedelta(days=1),
                              "bounds": list(LATENCY_BOUNDS_MS)}
    with connection.cursor() as cursor:
        for sql in (_DAILY_USAGE_SQL, _DAILY_WORKSPACE_USAGE_SQL, _DAILY_USER_USAGE_SQL):
            cursor.execute(sql, params)


def _cache_counts_take() -> list[str]:
    """Move the cache counters aside, so reads counted from now on start afresh."""
    cache_lookups_flush()  # this process's own counts; others send theirs within seconds
    client = redis_client()
    prefix = CACHE_COUNTS_KEY.format(day="")
    for key in client.scan_iter(match=f"{prefix}*"):
        day = key.decode().removeprefix(prefix)
        # Atomic: an increment lands either in the moved hash or in a new one.
        with contextlib.suppress(ResponseError):  # expired since the scan: nothing to move
            client.rename(key, _FLUSHING_KEY.format(day=day, suffix=secrets.token_hex(8)))
    # Hashes moved aside by an earlier run that failed to store them are stored now.
    return [key.decode() for key in
            client.scan_iter(match=_FLUSHING_KEY.format(day="*", suffix="*"))]


def _parse_counts(key: str, fields: Mapping[Any, Any]) -> Counter[tuple[object, ...]]:
    day = date.fromisoformat(key.split(":")[3])
    counts: Counter[tuple[object, ...]] = Counter()
    for field, value in fields.items():
        cache, feature, workspace, result = field.decode().split("|")
        counts[(day, cache, feature, int(workspace) if workspace else None, result)] += int(value)
    return counts


def _cache_counts_store(keys: Iterable[str]) -> int:
    keys = list(keys)
    if not keys:
        return 0
    client = redis_client()
    counts: Counter[tuple[object, ...]] = Counter()
    for key in keys:
        counts.update(_parse_counts(key, client.hgetall(key)))
    rows: dict[tuple[object, ...], list[int]] = {}
    for (day, cache, feature, workspace, result), n in counts.items():
        hits_and_misses = rows.setdefault((day, cache, feature, workspace), [0, 0])
        hits_and_misses[1 if result == "miss" else 0] += n
    with connection.cursor() as cursor:
        cursor.execute(_CACHE_COUNTS_SQL, {
            "days": [key[0] for key in rows], "caches": [key[1] for key in rows],
            "features": [key[2] for key in rows], "workspaces": [key[3] for key in rows],
            "hits": [n[0] for n in rows.values()], "misses": [n[1] for n in rows.values()],
        })
    # Dropped only once stored: if the transaction fails, the next run stores them.
    transaction.on_commit(lambda: client.delete(*keys))
    return len(rows)


def usage_rollup() -> RollupRun:
    """Bring the daily rollups up to date with the ledger and the cache counters."""
    for attempt in itertools.count(1):
        try:
            return _rollup_run()
        except (OperationalError, IntegrityError) as exc:
            # Another run committed after this one's snapshot was taken (it waited for
            # that run's lock): run again on a fresh snapshot.
            if attempt >= _RUN_ATTEMPTS or not _concurrent_run(exc):
                raise
    raise AssertionError("unreachable")


def _concurrent_run(exc: Exception) -> bool:
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate in ("40001", "23505")  # serialization failure; the state row created


def _rollup_run() -> RollupRun:
    with one_snapshot():
        with connection.cursor() as cursor:
            # One run at a time: the scheduler's, `aistack usage`'s or a test's. Readers
            # take no lock: they never wait for a run, nor make it wait.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
            cursor.execute("SELECT pg_current_snapshot()::text")
            snapshot = cursor.fetchone()[0]
        # Fails if a run committed after this snapshot: its rows could not be seen here.
        state, _ = RollupState.objects.select_for_update().get_or_create(pk=1)
        days = _touched_days(state.snapshot)
        for day in days:
            _day_aggregate(day)
        try:
            cache_counts = _cache_counts_store(_cache_counts_take())
        except RedisError as exc:
            # The ledger's rollups do not wait for Redis; the counts stay there till next run.
            logger.warning("cache counts not rolled up: %s", exc)
            cache_counts = 0
        state.snapshot = snapshot
        state.rolled_up_at = timezone.now()
        state.save()
    return RollupRun(days=tuple(days), cache_counts=cache_counts)
