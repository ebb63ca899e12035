"""Reads for the usage dashboard, API and CLI: the daily rollups plus the ledger's tail.

A report includes every call committed before it was asked for. Each read runs in one
snapshot, and adds to the rollups the ledger rows that the rollups' own snapshot could not
see (``aistack.usage.rollups``): the calls since the last run, a minute's worth at most,
found through an index. Readers take no lock, so they never wait for a run.

Every reader takes ``workspace_ids``: the workspaces whose usage the caller may see,
or None for all of it (see ``aistack.accounts.permissions.usage_workspace_ids``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import QuerySet, Sum
from django.utils import timezone

from aistack.accounts.models import Workspace
from aistack.errors import Invalid
from aistack.jobs import selectors as jobs_selectors
from aistack.jobs.selectors import JobFailures
from aistack.usage.models import (
    DailyCacheUsage,
    DailyUsage,
    DailyUserUsage,
    DailyWorkspaceUsage,
    RollupState,
    UsageRecord,
)
from aistack.usage.rollups import LATENCY_BOUNDS_MS, UNSEEN_BY_SNAPSHOT, one_snapshot

DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 400
TOP = 10
NO_OWNER = "(none)"


class GroupBy(StrEnum):
    FEATURE = "feature"
    USER = "user"
    WORKSPACE = "workspace"
    MODEL = "model"
    DAY = "day"


@dataclass(frozen=True, kw_only=True)
class Period:
    """Whole days (UTC), both ends included."""

    since: date
    until: date

    @property
    def days(self) -> list[date]:
        """Return every day of the period, in order."""
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]

    @property
    def end(self) -> datetime:
        """Return the moment the period ends."""
        return datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=UTC)


_RELATIVE_DAY = re.compile(r"(\d{1,6})\s*([dwh])")
_RELATIVE_UNITS = {"d": "days", "w": "weeks", "h": "hours"}


def day_parse(text: str) -> date:
    """Return the UTC day ``text`` names: an ISO date or time, today, yesterday, 7d, 2w, 24h.

    A relative form counts back from now and names the day it lands on.
    """
    cleaned = text.strip().lower()
    now = timezone.now()
    if cleaned in {"today", "now"}:
        return now.date()
    if cleaned == "yesterday":
        return now.date() - timedelta(days=1)
    if match := _RELATIVE_DAY.fullmatch(cleaned):
        back = timedelta(**{_RELATIVE_UNITS[match[2]]: int(match[1])})
        if back > timedelta(days=MAX_PERIOD_DAYS):
            raise Invalid(f"{text!r} reaches back more than {MAX_PERIOD_DAYS} days.")
        return (now - back).astimezone(UTC).date()
    try:
        parsed = datetime.fromisoformat(cleaned.upper())
        return parsed.astimezone(UTC).date() if parsed.tzinfo else parsed.date()
    except (ValueError, OverflowError):
        # OverflowError: a time whose UTC day falls outside the calendar (year 1 or 9999).
        raise Invalid(
            f"{text!r} is not a day: write an ISO date (2026-12-01), today, yesterday, "
            "or how far back (7d, 2w, 24h)."
        ) from None


def usage_period(*, since: date | None = None, until: date | None = None) -> Period:
    """Return the period asked for: by default the last 30 days, today included."""
    until = until or timezone.now().date()
    if not (date.min + timedelta(days=DEFAULT_PERIOD_DAYS) <= until < date.max):
        raise Invalid("`until` is out of range.")
    since = since or until - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if since > until:
        raise Invalid("`since` must not be after `until`.")
    if (until - since).days >= MAX_PERIOD_DAYS:
        raise Invalid(f"Ask for at most {MAX_PERIOD_DAYS} days at a time.")
    return Period(since=since, until=until)


def _scoped(rows: QuerySet[Any], period: Period,
            workspace_ids: Sequence[int] | None) -> QuerySet[Any]:
    rows = rows.filter(day__range=(period.since, period.until))
    if not _rolled_up_snapshot():
        return rows.none()  # never rolled up (or not since an upgrade): all is in the tail
    return rows if workspace_ids is None else rows.filter(workspace_id__in=workspace_ids)


def _figures(period: Period, workspace_ids: Sequence[int] | None) -> QuerySet[Any]:
    # Every workspace at once is read from the rollup that adds them up already.
    if workspace_ids is None:
        return _scoped(DailyUsage.objects.all(), period, None)
    return _scoped(DailyWorkspaceUsage.objects.all(), period, workspace_ids)


def _rolled_up_snapshot() -> str:
    return RollupState.objects.filter(pk=1).values_list("snapshot", flat=True).first() or ""


@dataclass(frozen=True, kw_only=True)
class TailCalls:
    """Ledger rows not rolled up yet, counted under one key and one pair of latency buckets."""

    day: date
    feature: str
    model: str
    workspace_id: int | None
    user_id: int | None
    latency_bucket: int
    ttft_bucket: int | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal

    def key(self, group_by: GroupBy) -> Any:
        """Return this entry's value of ``group_by``."""
        return getattr(self, {GroupBy.USER: "user_id", GroupBy.WORKSPACE: "workspace_id"}.get(
            group_by, group_by.value))


_TAIL_SQL = """
    SELECT (created_at AT TIME ZONE 'UTC')::date, feature, model, workspace_id, user_id,
           width_bucket(latency_ms, %(bounds)s::int[]),
           width_bucket(time_to_first_token_ms, %(bounds)s::int[]),
           count(*) FILTER (WHERE share_index = 0), sum(input_tokens), sum(output_tokens),
           sum(cost_usd)
    FROM usage_usagerecord
    WHERE created_at >= %(start)s AND created_at < %(end)s {scope} {unseen}
    GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def usage_tail(*, period: Period, workspace_ids: Sequence[int] | None) -> list[TailCalls]:
    """Return the period's calls that the rollups do not hold yet, summed per key."""
    snapshot = _rolled_up_snapshot()
    sql = _TAIL_SQL.format(
        scope="" if workspace_ids is None else "AND workspace_id = ANY(%(workspaces)s)",
        unseen=f"AND {UNSEEN_BY_SNAPSHOT}" if snapshot else "")
    start = datetime.combine(period.since, time.min, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"bounds": list(LATENCY_BOUNDS_MS), "start": start,
                             "end": period.end, "workspaces": list(workspace_ids or []),
                             "snapshot": snapshot})
        return [TailCalls(day=row[0], feature=row[1], model=row[2], workspace_id=row[3],
                          user_id=row[4], latency_bucket=row[5], ttft_bucket=row[6],
                          calls=row[7], input_tokens=row[8], output_tokens=row[9],
                          cost_usd=row[10]) for row in cursor.fetchall()]


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    """Usage summed under one key."""

    key: str
    # What people read: a workspace's name (its key is the slug, which is unique and
    # stays put when the workspace is renamed); the key itself for every other grouping.
    label: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


def _labels(group_by: GroupBy, values: set[Any]) -> dict[Any, tuple[str, str]]:
    """Return each value's key and label (see ``UsageRow``)."""
    ids = {value for value in values if value is not None}
    names: dict[Any, tuple[str, str]]
    if group_by == GroupBy.USER:
        names = {pk: (username, username) for pk, username
                 in User.objects.filter(pk__in=ids).values_list("pk", "username")}
    elif group_by == GroupBy.WORKSPACE:
        names = {pk: (slug, name) for pk, slug, name
                 in Workspace.objects.filter(pk__in=ids).values_list("pk", "slug", "name")}
    else:
        texts = {value: value.isoformat() if isinstance(value, date) else str(value)
                 for value in values}
        return {value: (text, text) for value, text in texts.items()}
    # Rollups outlive what they count: a deleted user or workspace keeps its id.
    return {value: (NO_OWNER, NO_OWNER) if value is None
            else names.get(value, (f"#{value}", f"#{value}")) for value in values}


def _sorted_key(value: Any) -> tuple[bool, Any]:
    return (value is None, value)  # as PostgreSQL sorts: no owner last


def usage_report(*, period: Period, group_by: GroupBy, workspace_ids: Sequence[int] | None,
                 limit: int | None = None) -> list[UsageRow]:
    """Return usage summed by ``group_by``: costliest first, or day by day."""
    by_owner = group_by in (GroupBy.USER, GroupBy.WORKSPACE)
    column = {GroupBy.USER: "user_id", GroupBy.WORKSPACE: "workspace_id"}.get(
        group_by, group_by.value)
    sums: dict[Any, list[Any]] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    with one_snapshot(read_only=True):
        rows = (_scoped(DailyUserUsage.objects.all(), period, workspace_ids) if by_owner
                else _figures(period, workspace_ids))
        for row in (rows.values(column).annotate(n=Sum("calls"), i=Sum("input_tokens"),
                                                 o=Sum("output_tokens"), c=Sum("cost_usd"))
                    .order_by()):
            _add(sums[row[column]], row["n"], row["i"], row["o"], row["c"])
        for tail in usage_tail(period=period, workspace_ids=workspace_ids):
            _add(sums[tail.key(group_by)], tail.calls, tail.input_tokens, tail.output_tokens,
                 tail.cost_usd)
        if group_by == GroupBy.DAY:
            keys = sorted(sums)
        else:
            keys = sorted(sums, key=lambda k: (-sums[k][3], _sorted_key(k)))
        keys = keys[:limit] if limit else keys
        labels = _labels(group_by, set(keys))
    return [UsageRow(key=labels[key][0], label=labels[key][1], calls=sums[key][0],
                     input_tokens=sums[key][1], output_tokens=sums[key][2],
                     cost_usd=sums[key][3]) for key in keys]


def _add(into: list[Any], *values: Any) -> None:
    for n, value in enumerate(values):
        into[n] += value


@dataclass(frozen=True, kw_only=True)
class DailyBreakdown:
    """Cost and tokens per day, one series per key (feature or model)."""

    days: list[date]
    cost_usd: dict[str, list[float]]
    tokens: dict[str, list[int]]


def usage_daily(*, period: Period, by: GroupBy, workspace_ids: Sequence[int] | None
                ) -> DailyBreakdown:
    """Return cost and tokens per day, split by feature or by model."""
    days = period.days
    index = {day: n for n, day in enumerate(days)}
    cost: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    tokens: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    with one_snapshot(read_only=True):
        rows = (_figures(period, workspace_ids).values("day", by.value)
                .annotate(cost=Sum("cost_usd"), tokens_in=Sum("input_tokens"),
                          tokens_out=Sum("output_tokens"))
                .order_by(by.value, "day"))
        figures = [(row["day"], row[by.value], row["cost"], row["tokens_in"] + row["tokens_out"])
                   for row in rows]
        figures += [(tail.day, tail.key(by), tail.cost_usd,
                     tail.input_tokens + tail.output_tokens)
                    for tail in usage_tail(period=period, workspace_ids=workspace_ids)]
    for day, key, day_cost, day_tokens in sorted(figures, key=lambda f: (f[1], f[0])):
        cost[key][index[day]] += float(day_cost)
        tokens[key][index[day]] += day_tokens
    return DailyBreakdown(days=days, cost_usd=dict(cost), tokens=dict(tokens))


def histogram_percentile(counts: Mapping[int, int], q: float) -> float | None:
    """Return the ``q`` quantile of a latency histogram in milliseconds, or None if empty.

    Bucket ``i`` holds latencies from ``LATENCY_BOUNDS_MS[i - 1]`` up to
    ``LATENCY_BOUNDS_MS[i]`` (bucket 0 from 0, the last one without an upper end);
    within a bucket latencies are taken to be spread evenly.
    """
    total = sum(counts.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(counts):
        n = counts[bucket]
        if seen + n >= rank:
            low = LATENCY_BOUNDS_MS[bucket - 1] if bucket > 0 else 0
            if bucket >= len(LATENCY_BOUNDS_MS):
                return float(low)
            return low + (LATENCY_BOUNDS_MS[bucket] - low) * (rank - seen) / n
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


@dataclass(frozen=True, kw_only=True)
class LatencyRow:
    """Latency percentiles of one feature on one model, in milliseconds."""

    feature: str
    model: str
    calls: int
    p50_ms: float | None
    p95_ms: float | None
    ttft_calls: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


_HISTOGRAMS_SQL = """
    SELECT d.feature, d.model, h.kind, h.bucket, sum(h.calls)::bigint
    FROM {table} d CROSS JOIN LATERAL (
        SELECT 'latency' AS kind, key::int AS bucket, value::bigint AS calls
        FROM jsonb_each_text(d.latency_histogram)
        UNION ALL
        SELECT 'ttft', key::int, value::bigint FROM jsonb_each_text(d.ttft_histogram)
    ) h
    WHERE d.day BETWEEN %(since)s AND %(until)s {scope}
    GROUP BY d.feature, d.model, h.kind, h.bucket
"""


def latency_percentiles(*, period: Period, workspace_ids: Sequence[int] | None
                        ) -> list[LatencyRow]:
    """Return p50 and p95 of latency and of time to first token, per feature and model."""
    if workspace_ids is None:
        table, scope = DailyUsage._meta.db_table, ""
    else:
        table = DailyWorkspaceUsage._meta.db_table
        scope = "AND d.workspace_id = ANY(%(workspaces)s)"
    histograms: dict[tuple[str, str], dict[str, dict[int, int]]] = defaultdict(
        lambda: {"latency": {}, "ttft": {}})
    with one_snapshot(read_only=True), connection.cursor() as cursor:
        if _rolled_up_snapshot():
            cursor.execute(_HISTOGRAMS_SQL.format(table=table, scope=scope), {
                "since": period.since, "until": period.until,
                "workspaces": list(workspace_ids or []),
            })
            for feature, model, kind, bucket, calls in cursor.fetchall():
                histograms[(feature, model)][kind][bucket] = calls
        for tail in usage_tail(period=period, workspace_ids=workspace_ids):
            latency = histograms[(tail.feature, tail.model)]["latency"]
            latency[tail.latency_bucket] = latency.get(tail.latency_bucket, 0) + tail.calls
            if tail.ttft_bucket is not None:
                ttft = histograms[(tail.feature, tail.model)]["ttft"]
                ttft[tail.ttft_bucket] = ttft.get(tail.ttft_bucket, 0) + tail.calls
    rows = []
    for (feature, model), kinds_ in sorted(histograms.items()):
        latency, ttft = kinds_["latency"], kinds_["ttft"]
        rows.append(LatencyRow(
            feature=feature, model=model, calls=sum(latency.values()),
            p50_ms=histogram_percentile(latency, 0.5), p95_ms=histogram_percentile(latency, 0.95),
            ttft_calls=sum(ttft.values()), ttft_p50_ms=histogram_percentile(ttft, 0.5),
            ttft_p95_ms=histogram_percentile(ttft, 0.95),
        ))
    return rows


def calls_slowest(*, period: Period, workspace_ids: Sequence[int] | None,
                  limit: int = TOP) -> list[UsageRecord]:
    """Return the slowest calls of the period's last 24 hours (of the ledger, indexed)."""
    end = min(period.end, timezone.now())
    calls = UsageRecord.objects.filter(created_at__gte=end - timedelta(days=1),
                                       created_at__lt=end)
    if workspace_ids is not None:
        calls = calls.filter(workspace_id__in=workspace_ids)
    else:
        calls = calls.filter(share_index=0)  # a call shared by workspaces is listed once
    # Ids first, from the index on (created_at, latency_ms): a busy day's rows stay unread.
    slowest = calls.order_by("-latency_ms", "-pk").values_list("pk", flat=True)[:limit]
    return list(UsageRecord.objects.filter(pk__in=list(slowest))
                .select_related("user", "workspace").order_by("-latency_ms", "-pk"))


def job_failures(*, period: Period, workspace_ids: Sequence[int] | None) -> list[JobFailures]:
    """Return, per task, how many jobs failed in the period and the last errors."""
    return jobs_selectors.job_failures(start=datetime.combine(period.since, time.min, tzinfo=UTC),
                                       end=period.end, workspace_ids=workspace_ids)


@dataclass(frozen=True, kw_only=True)
class CacheRatio:
    """How often one feature found what it needed in one cache."""

    cache: str
    feature: str
    hits: int
    misses: int

    @property
    def ratio(self) -> float:
        """Return the share of reads that hit."""
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0


def cache_hit_ratios(*, period: Period, workspace_ids: Sequence[int] | None
                     ) -> list[CacheRatio]:
    """Return cache hits and misses per feature and cache."""
    rows = (_scoped(DailyCacheUsage.objects.all(), period, workspace_ids)
            .values("feature", "cache").annotate(h=Sum("hits"), m=Sum("misses"))
            .order_by("feature", "cache"))
    return [CacheRatio(cache=row["cache"], feature=row["feature"], hits=row["h"],
                       misses=row["m"]) for row in rows]


@dataclass(frozen=True, kw_only=True)
class Dashboard:
    """Everything the usage dashboard shows."""

    period: Period
    totals: UsageRow
    by_feature: DailyBreakdown
    by_model: DailyBreakdown
    top_users: list[UsageRow]
    top_workspaces: list[UsageRow]
    latency: list[LatencyRow]
    slowest: list[UsageRecord]
    job_failures: list[JobFailures]
    cache: list[CacheRatio]


def usage_dashboard(*, period: Period, workspace_ids: Sequence[int] | None) -> Dashboard:
    """Return the dashboard of the period over the workspaces (None: all of them)."""
    with one_snapshot(read_only=True):
        features = usage_report(period=period, group_by=GroupBy.FEATURE,
                                workspace_ids=workspace_ids)
        return Dashboard(
            period=period,
            totals=UsageRow(key="total", label="total",
                            calls=sum(row.calls for row in features),
                            input_tokens=sum(row.input_tokens for row in features),
                            output_tokens=sum(row.output_tokens for row in features),
                            cost_usd=sum((row.cost_usd for row in features), Decimal(0))),
            by_feature=usage_daily(period=period, by=GroupBy.FEATURE, workspace_ids=workspace_ids),
            by_model=usage_daily(period=period, by=GroupBy.MODEL, workspace_ids=workspace_ids),
            top_users=usage_report(period=period, group_by=GroupBy.USER,
                                   workspace_ids=workspace_ids, limit=TOP),
            top_workspaces=usage_report(period=period, group_by=GroupBy.WORKSPACE,
                                        workspace_ids=workspace_ids, limit=TOP),
            latency=latency_percentiles(period=period, workspace_ids=workspace_ids),
            slowest=calls_slowest(period=period, workspace_ids=workspace_ids),
            job_failures=job_failures(period=period, workspace_ids=workspace_ids),
            cache=cache_hit_ratios(period=period, workspace_ids=workspace_ids),
        )
