"""Benchmark usage reporting at scale and the cost of the budget check per model call.

Run with ``python bench/usage.py [--rows 1000000]``. It starts the embedded PostgreSQL
and Redis in a scratch AISTACK_HOME (the services ``aistack serve`` uses), writes a
ledger of ``--rows`` calls spread over 90 days (one INSERT ... SELECT over
generate_series), rolls it up, and times:

- the dashboard's queries over the rollups plus the ledger's tail (the calls since the
  last run, which every read adds), for every workspace and for one, over 30 and 90 days
  (goal: p95 <= 200 ms for the whole dashboard);
- a rollup run after new calls arrive (what the scheduler does every minute);
- the budget check a priced model call pays: the estimate, the reservation and the
  settlement, against the choke point's own cost per call (goal: <= 1 ms median).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import bench_arguments, django_on_embedded_services, median, percentile

USERS = 200
WORKSPACES = 40
DAYS = 90

# Five features, four models, users in their workspaces, all picked at random; latencies
# log-normal-ish, first tokens only for streamed features; one call in 97 fails.
_LEDGER_SQL = """
    INSERT INTO usage_usagerecord (
        feature, user_id, workspace_id, provider, model, prompt_version, input_tokens,
        output_tokens, cached_tokens, cost_usd, latency_ms, time_to_first_token_ms, attempts,
        outcome, error_class, request_id, cache_hit, created_at)
    SELECT f.feature, u.id, u.workspace_id, m.provider, m.provider || ':' || m.model, '',
           pick.input_tokens, pick.output_tokens, 0,
           (pick.input_tokens * m.price_in + pick.output_tokens * m.price_out) / 1000000,
           (exp(random() * 3.5) * f.base_ms)::int,
           CASE WHEN f.streams THEN (exp(random() * 2) * 80)::int END,
           1, CASE WHEN pick.failed THEN 'error' ELSE 'ok' END,
           CASE WHEN pick.failed THEN 'Timeout' ELSE '' END, '', false, pick.created_at
    FROM (
        SELECT floor(random() * 5)::int AS feature, floor(random() * 4)::int AS model,
               floor(random() * %(users)s)::int AS user_n, 200 + floor(random() * 3000)::int
               AS input_tokens, floor(random() * 600)::int AS output_tokens,
               random() < 1.0 / 97 AS failed,
               %(end)s - random() * interval '%(days)s days' AS created_at
        FROM generate_series(1, %(rows)s)
    ) pick
    JOIN bench_users u ON u.n = pick.user_n
    JOIN (VALUES (0, 'summary', 120, false), (1, 'ask', 300, true), (2, 'chat', 250, true),
                 (3, 'search', 10, false), (4, 'index', 40, false))
         AS f(n, feature, base_ms, streams) ON f.n = pick.feature
    JOIN (VALUES (0, 'openai', 'gpt-4.1-mini', 0.4, 1.6), (1, 'openai', 'gpt-4.1', 2.0, 8.0),
                 (2, 'anthropic', 'claude-haiku-4-5', 1.0, 5.0),
                 (3, 'local', 'all-MiniLM-L6-v2-int8', 0, 0))
         AS m(n, provider, model, price_in, price_out) ON m.n = pick.model
"""


def _timed(call: Callable[[], object], runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _report(label: str, timings_ms: list[float]) -> None:
    print(f"  {label:60s} median {median(timings_ms):8.1f} ms   "
          f"p95 {percentile(timings_ms, 0.95):8.1f} ms")


def _report_us(label: str, timings_ms: list[float]) -> None:
    print(f"  {label:60s} median {median(timings_ms) * 1000:8.0f} µs   "
          f"p95 {percentile(timings_ms, 0.95) * 1000:8.0f} µs")


def ledger_fill(rows: int) -> None:
    """Write ``rows`` ledger rows over the last 90 days, for users in their workspaces."""
    from django.db import connection
    from django.utils import timezone

    from aistack.accounts.models import Workspace

    workspaces = Workspace.objects.bulk_create(
        Workspace(name=f"Team {n}", slug=f"team-{n}") for n in range(WORKSPACES))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO auth_user (username, password, is_superuser, is_staff, is_active, "
            "first_name, last_name, email, date_joined) "
            "SELECT 'user' || n, '!', false, false, true, '', '', '', now() "
            "FROM generate_series(0, %s - 1) n", [USERS])
        cursor.execute(
            "CREATE TEMP TABLE bench_users AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, "
            "id, (%s::bigint[])[1 + (row_number() OVER (ORDER BY id) - 1) %% %s] AS workspace_id "
            "FROM auth_user", [[w.pk for w in workspaces], WORKSPACES])
        cursor.execute("ANALYZE bench_users")
        started = time.perf_counter()
        cursor.execute(_LEDGER_SQL, {"rows": rows, "users": USERS, "days": DAYS,
                                     "end": timezone.now()})
        print(f"ledger: {rows} rows over {DAYS} days, {USERS} users, {WORKSPACES} workspaces, "
              f"written in {time.perf_counter() - started:.1f}s")
        # What autovacuum does to a table this size soon after; queries read its statistics.
        cursor.execute("VACUUM ANALYZE usage_usagerecord")


def bench_rollups(new_calls: int) -> None:
    """Print how long the first rollup and an incremental one take."""
    from django.db import connection
    from django.utils import timezone

    from aistack.usage.models import DailyUsage, DailyUserUsage, DailyWorkspaceUsage, Outcome
    from aistack.usage.rollups import usage_rollup
    from aistack.usage.services import usage_record
    from aistack.usage.types import Attribution, Usage

    started = time.perf_counter()
    first = usage_rollup()
    first_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        # As autovacuum soon would: the planner needs the new tables' statistics.
        cursor.execute("ANALYZE usage_dailyusage, usage_dailyworkspaceusage, "
                       "usage_dailyuserusage")
    print(f"rollups for {len(first.days)} days built in {first_s:.1f}s: "
          f"{DailyUsage.objects.count()} rows by feature and model, "
          f"{DailyWorkspaceUsage.objects.count()} by workspace too, "
          f"{DailyUserUsage.objects.count()} by user")
    def write_calls() -> None:
        for _ in range(new_calls):
            usage_record(attribution=Attribution(feature="chat"), provider="scripted",
                         model="echo", usage=Usage(input_tokens=10, output_tokens=5),
                         latency_ms=120, outcome=Outcome.OK)

    write_calls()
    started = time.perf_counter()
    incremental = usage_rollup()
    print(f"  a run after {new_calls} new calls re-aggregates {len(incremental.days)} day(s) "
          f"({timezone.now().date()}) in {(time.perf_counter() - started) * 1000:.0f} ms")
    # Left for the dashboard to add from the ledger, as a minute of busy traffic would be.
    write_calls()
    print(f"  {new_calls} calls written since that run: every read adds them from the ledger")


def bench_dashboard(runs: int) -> None:
    """Print the dashboard's query times over the rollups."""
    from django.utils import timezone

    from aistack.usage import selectors
    from aistack.usage.models import DailyWorkspaceUsage

    one = [DailyWorkspaceUsage.objects.exclude(workspace_id=None).values_list(
        "workspace_id", flat=True).first() or 0]
    print(f"dashboard queries ({runs} runs each)")
    results: dict[str, list[float]] = {}
    today = timezone.now().date()
    for days in (30, 90):
        period = selectors.usage_period(since=today - timedelta(days=days - 1), until=today)
        for scope, workspace_ids in (("every workspace", None), ("one workspace", one)):
            label = f"whole dashboard, {days} days, {scope}"
            results[label] = _timed(lambda p=period, w=workspace_ids: selectors.usage_dashboard(
                period=p, workspace_ids=w), runs)
            _report(label, results[label])
    period = selectors.usage_period()
    parts: dict[str, Callable[[], Any]] = {
        "cost and tokens per day by feature": lambda: selectors.usage_daily(
            period=period, by=selectors.GroupBy.FEATURE, workspace_ids=None),
        "top users": lambda: selectors.usage_report(
            period=period, group_by=selectors.GroupBy.USER, workspace_ids=None, limit=10),
        "latency percentiles": lambda: selectors.latency_percentiles(
            period=period, workspace_ids=None),
        "slowest calls (ledger, last day)": lambda: selectors.calls_slowest(
            period=period, workspace_ids=None),
        "job failures": lambda: selectors.job_failures(period=period, workspace_ids=None),
        "cache hit ratios": lambda: selectors.cache_hit_ratios(
            period=period, workspace_ids=None),
    }
    for label, call in parts.items():
        _report(f"30 days, every workspace: {label}", _timed(call, runs))
    worst = max(percentile(t, 0.95) for t in results.values())
    print(f"  worst whole-dashboard p95 {worst:.1f} ms  (goal <= 200 ms)")


def bench_budget_check(calls: int) -> None:
    """Print the budget check's cost per call, and against the choke point's own."""
    from decimal import Decimal

    from aistack.accounts.models import Workspace
    from aistack.ai import services
    from aistack.ai.backends import openai
    from aistack.ai.types import ChatRequest, Message
    from aistack.usage.budgets import budget_reserve, budget_settle, call_estimate_usd
    from aistack.usage.models import Budget
    from aistack.usage.types import Attribution

    workspace = Workspace.objects.create(name="Budgeted", slug="budgeted")
    Budget.objects.create(workspace=workspace, monthly_limit_usd=Decimal("1000000"))
    unlimited = Workspace.objects.create(name="Unlimited", slug="unlimited")
    # Never called: it only prices the estimate, as a hosted model's would be.
    priced = openai.ChatModel(alias="bench", model="gpt-4.1-mini", options={})
    prompt = "What does the runbook say about restarting the service? " * 20

    def check(workspace_id: int) -> Callable[[], None]:
        attribution = Attribution(feature="chat", workspace_id=workspace_id)

        def reserve_and_settle() -> None:
            estimate = call_estimate_usd(served_by=[(priced.provider, priced.model)],
                                         input_chars=len(prompt),
                                         output_tokens=1024)
            reservation = budget_reserve(attribution=attribution, estimate=estimate)
            if reservation is not None:
                budget_settle(reservation=reservation, cost=estimate / 2)
        return reserve_and_settle

    request = ChatRequest(messages=(Message(role="user", content="ping"),))
    free = Attribution(feature="bench")
    choke_point = _timed(lambda: services.chat_complete(request=request, attribution=free),
                         calls)
    for call in (check(workspace.pk), check(unlimited.pk)):
        _timed(call, 50)  # warm connections and the price table
    limited_ms = _timed(check(workspace.pk), calls)
    unlimited_ms = _timed(check(unlimited.pk), calls)
    print(f"budget check per priced model call ({calls} calls)")
    _report_us("estimate, reserve and settle (a limit applies)", limited_ms)
    _report_us("estimate and limit lookup (no limit applies)", unlimited_ms)
    _report_us("choke point, whole call (scripted:echo, free)", choke_point)
    ratio = median(limited_ms) / median(choke_point)
    print(f"  budget check / choke point's whole call  {ratio:.2f}  (goal: check <= 1 ms median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows to write")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each dashboard query")
    parser.add_argument("--new-calls", type=int, default=2000,
                        help="calls written after the rollups, before each run and each read")
    parser.add_argument("--budget-calls", type=int, default=3000)
    args = bench_arguments(parser, rows=500, runs=3, new_calls=50, budget_calls=50)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    release = django_on_embedded_services(home, AI_CHAT_MODEL="scripted:echo",
                                          AI_EMBEDDING_MODEL="scripted:hash")
    try:
        ledger_fill(args.rows)
        bench_rollups(args.new_calls)
        bench_dashboard(args.runs)
        bench_budget_check(args.budget_calls)
    finally:
        release()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
