"""Writes to the usage ledger and to the cache counters behind the dashboard."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from typing import Any, cast

from django.db import connection
from django.db.models import Field
from django.utils import timezone
from redis.exceptions import RedisError

from aistack.observability.metrics import cache_requests
from aistack.redis.connections import redis_client
from aistack.usage.budgets import even_shares
from aistack.usage.models import Outcome, UsageRecord
from aistack.usage.pricing import cost_usd
from aistack.usage.types import Attribution, Usage

logger = logging.getLogger(__name__)

# The ledger keeps costs to 8 decimal places.
_LEDGER_UNITS = Decimal(10) ** 8

# Cache reads are counted per day in a Redis hash until the rollup moves them to
# PostgreSQL: a row write per search or summary read would cost more than the read.
CACHE_COUNTS_KEY = "aistack:usage:cache-counts:{day}"
CACHE_COUNTS_TTL_SECONDS = 14 * 24 * 3600


def usage_record(
    *,
    attribution: Attribution,
    provider: str,
    model: str,
    usage: Usage,
    latency_ms: int,
    outcome: Outcome,
    attempts: int = 1,
    time_to_first_token_ms: int | None = None,
    error_class: str = "",
    request_id: str | None = None,
    cache_hit: bool = False,
    cost: Decimal | None = None,
) -> UsageRecord:
    """Write the ledger row of a call; ``model`` is the name without the provider prefix.

    ``cost`` is priced from ``usage`` when not given. A call charged to several
    workspaces is one row for each, with an equal share of its tokens and cost (the
    first row takes what does not divide), and the call is counted at the first.
    """
    cost = cost_usd(provider=provider, model=model, usage=usage) if cost is None else cost
    workspaces = attribution.workspace_ids or (attribution.workspace_id,)
    n = len(workspaces)
    # In the ledger's unit (10^-8 USD), so that the shares add up to the cost exactly.
    units = int((cost * _LEDGER_UNITS).to_integral_value(rounding=ROUND_HALF_EVEN))
    shares = zip(workspaces, even_shares(usage.input_tokens, n),
                 even_shares(usage.output_tokens, n), even_shares(usage.cached_tokens, n),
                 (Decimal(part) / _LEDGER_UNITS for part in even_shares(units, n)), strict=True)
    rows = [
        UsageRecord(
            feature=attribution.feature,
            user_id=attribution.user_id,
            workspace_id=workspace_id,
            share_index=index,
            object_id=attribution.object_id,
            prompt_version=attribution.prompt_version,
            provider=provider,
            model=f"{provider}:{model}",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            cost_usd=share_cost,
            latency_ms=latency_ms,
            time_to_first_token_ms=time_to_first_token_ms,
            attempts=attempts,
            outcome=outcome,
            error_class=error_class,
            request_id=request_id or "",
            cache_hit=cache_hit,
        )
        for index, (workspace_id, input_tokens, output_tokens, cached_tokens, share_cost)
        in enumerate(shares)
    ]
    if len(rows) > 1:
        return UsageRecord.objects.bulk_create(rows)[0]  # all shares or none
    return _row_insert(rows[0])


@cache
def _insert_statement() -> tuple[str, list[Field[Any, Any]], list[Field[Any, Any]]]:
    """Return the INSERT of one row, the fields it writes, and those it returns: the
    id and the columns only the database fills (the writing transaction's id)."""
    meta = UsageRecord._meta
    written = [field for field in meta.concrete_fields
               if not field.primary_key and (field.has_default() or not field.has_db_default())]
    returned = [field for field in meta.concrete_fields if field not in written]
    quote = connection.ops.quote_name

    def names(fields: list[Field[Any, Any]]) -> str:
        # Concrete fields: each has its column.
        return ", ".join(quote(cast(str, field.column)) for field in fields)

    values = ", ".join(["%s"] * len(written))
    sql = f"INSERT INTO {quote(meta.db_table)} ({names(written)}) VALUES ({values}) RETURNING {names(returned)}"  # noqa: S608, E501 - the model's names, quoted
    return sql, written, returned


def _row_insert(row: UsageRecord) -> UsageRecord:
    """Insert one row in one statement, outside any transaction of its own, and return it
    as ``save()`` would.

    Paid by every model call, a query's embedding among them: ``save()`` builds its
    statement anew each time (0.90 against 0.65 ms a row here, a scratch A/B), and
    ``bulk_create`` wraps it in a transaction of its own, three more round trips.
    """
    sql, written, returned = _insert_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [field.get_db_prep_save(getattr(row, field.attname), connection)
                             for field in written])
        [values] = cursor.fetchall()
    for field, value in zip(returned, values, strict=True):
        setattr(row, field.attname, value)
    row._state.adding, row._state.db = False, connection.alias
    return row


def _cache_counts_field(*, cache: str, feature: str, workspace_id: int | None,
                        result: str) -> str:
    # Read back by aistack.usage.rollups, which splits it on "|".
    return f"{cache}|{feature}|{workspace_id or ''}|{result}"


# Counts wait in the process this long at most before a thread of their own sends them
# to Redis: a warm cache read is a few Redis round trips, and counting it must add none,
# least of all a blocking one on the web's event loop (the summary fast path counts).
CACHE_COUNTS_FLUSH_SECONDS = 2.0
_pending_lock = threading.Lock()
_pending: Counter[tuple[str, str]] = Counter()
_flusher_pid = 0


def cache_lookups_record(*, cache: str, feature: str, workspace_id: int | None,
                         hits: int, misses: int) -> None:
    """Count reads of ``cache`` for ``feature``: for /metrics and the dashboard's hit ratio."""
    key = CACHE_COUNTS_KEY.format(day=timezone.now().date().isoformat())
    with _pending_lock:
        for result, n in (("hit", hits), ("miss", misses)):
            if n:
                cache_requests.labels(cache=cache, feature=feature, result=result).inc(n)
                _pending[key, _cache_counts_field(cache=cache, feature=feature,
                                                  workspace_id=workspace_id,
                                                  result=result)] += n
    if _flusher_pid != os.getpid():  # none yet in this process (a fork has none either)
        _flusher_start()


def _flusher_start() -> None:
    global _flusher_pid
    with _pending_lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="cache-counts", daemon=True).start()


def _flush_forever() -> None:
    while True:
        time.sleep(CACHE_COUNTS_FLUSH_SECONDS)
        cache_lookups_flush()


def cache_lookups_flush() -> None:
    """Send the cache reads counted in this process to Redis."""
    with _pending_lock:
        counts = dict(_pending)
        _pending.clear()
    if not counts:
        return
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for (key, field), n in counts.items():
                pipe.hincrby(key, field, n)
            for key in {key for key, _ in counts}:
                pipe.expire(key, CACHE_COUNTS_TTL_SECONDS)
            pipe.execute()
    except RedisError as exc:
        # Statistics: never worth failing the read that is being counted.
        logger.warning("cache reads not counted: %s", exc)


# What a process counted in its last seconds is not lost when it stops.
atexit.register(cache_lookups_flush)
