"""Daily rollups: incremental, exact sums, percentiles from histograms, cache counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from aistack.ai.services import chat_stream
from aistack.ai.types import ChatRequest, Message
from aistack.documents.services import document_create
from aistack.documents.summaries import summary_read
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.redis.connections import redis_client
from aistack.usage.models import DailyCacheUsage, DailyUsage, Outcome
from aistack.usage.rollups import LATENCY_BOUNDS_MS, usage_rollup
from aistack.usage.selectors import (
    GroupBy,
    cache_hit_ratios,
    calls_slowest,
    histogram_percentile,
    job_failures,
    latency_percentiles,
    usage_daily,
    usage_period,
    usage_report,
)
from aistack.usage.services import cache_lookups_record
from aistack.usage.tasks import rollup
from aistack.usage.types import Attribution, Usage
from tests.usage.conftest import ledger_row

# The rollups store the snapshot they summed in: only committed rows are told apart.
pytestmark = pytest.mark.django_db(transaction=True)


def _day(days_ago: int) -> datetime:
    return (timezone.now() - timedelta(days=days_ago)).replace(hour=12, minute=0, second=0,
                                                               microsecond=0)


def test_a_run_re_aggregates_only_the_days_written_since_the_last(alice: User) -> None:
    workspace = alice.personal_workspace.pk
    ledger_row(user=alice, workspace_id=workspace, at=_day(3), cost="0.5")
    ledger_row(user=alice, workspace_id=workspace, at=_day(1), cost="0.25")
    first = usage_rollup()
    untouched = DailyUsage.objects.get(day=_day(3).date())

    ledger_row(user=alice, workspace_id=workspace, at=_day(1), cost="0.125", feature="summary")
    second = usage_rollup()
    idle = usage_rollup()

    assert first.days == (_day(3).date(), _day(1).date())
    assert second.days == (_day(1).date(),)
    assert idle.days == ()
    # The day nobody wrote to is the very row written by the first run.
    assert DailyUsage.objects.get(day=_day(3).date()).pk == untouched.pk
    by_day = usage_report(period=usage_period(), group_by=GroupBy.DAY, workspace_ids=None)
    assert [(row.key, row.calls, row.cost_usd) for row in by_day] == [
        (_day(3).date().isoformat(), 1, Decimal("0.5")),
        (_day(1).date().isoformat(), 2, Decimal("0.375")),
    ]


def test_rollups_sum_exactly_what_the_ledger_holds(alice: User, bob: User) -> None:
    for user, feature, model in [(alice, "chat", "openai:gpt-4.1-mini"),
                                 (alice, "ask", "openai:gpt-4.1-mini"),
                                 (bob, "chat", "anthropic:claude-haiku-4-5"),
                                 (bob, "chat", "openai:gpt-4.1-mini")]:
        provider, _, name = model.partition(":")
        ledger_row(user=user, workspace_id=user.personal_workspace.pk, feature=feature,
                   provider=provider, model=name,
                   usage=Usage(input_tokens=1000, output_tokens=100), cost="0.001")
    ledger_row(user=bob, workspace_id=bob.personal_workspace.pk, outcome=Outcome.ERROR,
               usage=Usage(), cost="0")
    usage_rollup()
    period = usage_period()

    by_feature = {row.key: (row.calls, row.input_tokens, row.cost_usd)
                  for row in usage_report(period=period, group_by=GroupBy.FEATURE,
                                          workspace_ids=None)}
    by_user = [(row.key, row.calls) for row in usage_report(
        period=period, group_by=GroupBy.USER, workspace_ids=None)]
    daily = usage_daily(period=period, by=GroupBy.MODEL, workspace_ids=None)

    assert by_feature == {"chat": (4, 3000, Decimal("0.003")), "ask": (1, 1000, Decimal("0.001"))}
    # Equal costs: in order of user id.
    assert by_user == [("alice", 2), ("bob", 3)]
    assert sum(daily.cost_usd["openai:gpt-4.1-mini"]) == pytest.approx(0.003)
    assert daily.tokens["anthropic:claude-haiku-4-5"][-1] == 1100
    assert DailyUsage.objects.filter(errors=1).count() == 1


def test_percentiles_come_from_the_histograms_within_a_bucket(alice: User) -> None:
    for latency in range(1, 201):
        ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, latency_ms=latency * 5,
                   ttft_ms=latency if latency % 2 else None)
    usage_rollup()

    [row] = latency_percentiles(period=usage_period(), workspace_ids=None)

    assert (row.feature, row.model, row.calls, row.ttft_calls) == (
        "chat", "openai:gpt-4.1-mini", 200, 100)
    # True values: 500 and 950 ms; first token 100 and 190 ms. A bucket is 25% wide.
    assert row.p50_ms == pytest.approx(500, rel=0.1)
    assert row.p95_ms == pytest.approx(950, rel=0.1)
    assert row.ttft_p50_ms == pytest.approx(100, rel=0.1)
    assert row.ttft_p95_ms == pytest.approx(190, rel=0.1)


def test_histogram_percentiles_interpolate_and_handle_the_ends() -> None:
    bucket = 21  # latencies from the 21st bound up to the 22nd
    lower, upper = LATENCY_BOUNDS_MS[20], LATENCY_BOUNDS_MS[21]

    assert histogram_percentile({}, 0.5) is None
    assert histogram_percentile({bucket: 10}, 0.5) == pytest.approx(lower + (upper - lower) / 2)
    assert histogram_percentile({0: 1, len(LATENCY_BOUNDS_MS): 1}, 0.95) == LATENCY_BOUNDS_MS[-1]


def test_cache_reads_are_counted_and_rolled_up_once(alice: User) -> None:
    workspace = alice.personal_workspace.pk
    cache_lookups_record(cache="summary", feature="summary", workspace_id=workspace,
                         hits=3, misses=1)
    cache_lookups_record(cache="query_vector", feature="search", workspace_id=None,
                         hits=0, misses=2)

    usage_rollup()
    usage_rollup()

    ratios = {(r.feature, r.cache): (r.hits, r.misses, r.ratio)
              for r in cache_hit_ratios(period=usage_period(), workspace_ids=None)}
    assert ratios == {("summary", "summary"): (3, 1, 0.75), ("search", "query_vector"): (0, 2, 0.0)}
    assert not list(redis_client().scan_iter(match="aistack:usage:cache*"))
    mine = cache_hit_ratios(period=usage_period(), workspace_ids=[workspace])
    assert [(r.feature, r.hits) for r in mine] == [("summary", 3)]


def test_summary_reads_count_as_hits_and_misses(
    alice: User, scripted_chat: Callable[..., None]
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content="Deploys happen on Tuesdays.", author=alice)

    summary_read(document=document)
    summary_read(document=document)
    usage_rollup()

    assert DailyCacheUsage.objects.filter(cache="summary").values_list(
        "feature", "workspace_id", "hits", "misses").get() == (
        "summary", alice.personal_workspace.pk, 1, 1)


def test_streamed_calls_record_their_time_to_first_token(
    alice: User, scripted_chat: Callable[..., None]
) -> None:
    stream = chat_stream(request=ChatRequest(messages=(Message(role="user", content="Hi"),)),
                         attribution=Attribution(feature="chat", user_id=alice.pk))
    assert "".join(stream) == "Hi"
    usage_rollup()

    [row] = latency_percentiles(period=usage_period(), workspace_ids=None)

    assert (row.model, row.ttft_calls) == ("scripted:echo", 1)
    assert row.ttft_p50_ms is not None


def test_slowest_calls_are_those_of_the_periods_last_day(alice: User) -> None:
    workspace = alice.personal_workspace.pk
    ledger_row(user=alice, workspace_id=workspace, latency_ms=9000, at=_day(2))
    fast = ledger_row(user=alice, workspace_id=workspace, latency_ms=20)
    slow = ledger_row(user=alice, workspace_id=workspace, latency_ms=4000)
    other = ledger_row(user=alice, workspace_id=None, latency_ms=5000)

    assert calls_slowest(period=usage_period(), workspace_ids=None) == [other, slow, fast]
    assert calls_slowest(period=usage_period(), workspace_ids=[workspace]) == [slow, fast]


def test_job_failures_are_counted_by_task_with_their_last_errors(alice: User, bob: User) -> None:
    mine = document_create(workspace=alice.personal_workspace, title="A", content="a",
                           author=alice)
    theirs = document_create(workspace=bob.personal_workspace, title="B", content="b",
                             author=bob)
    finished = datetime.now(UTC)
    Job.objects.filter(object_id=mine.pk, kind="documents.summary").update(
        status=JobStatus.FAILED, last_error="The model is unavailable.", finished_at=finished)
    Job.objects.filter(object_id=theirs.pk).update(
        status=JobStatus.FAILED, last_error="Could not read the file.",
        finished_at=finished - timedelta(minutes=1))

    everyone = {f.task: (f.failed, [error for _, error in f.last_errors])
                for f in job_failures(period=usage_period(), workspace_ids=None)}
    alices = job_failures(period=usage_period(), workspace_ids=[alice.personal_workspace.pk])

    assert everyone == {"documents.summary": (2, ["The model is unavailable.",
                                                  "Could not read the file."]),
                        "documents.index": (1, ["Could not read the file."])}
    assert [(f.task, f.failed) for f in alices] == [("documents.summary", 1)]


def test_the_scheduler_runs_the_rollup_every_minute(alice: User, settings: Any) -> None:
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, cost="0.5")

    rollup()

    entry = settings.CELERY_BEAT_SCHEDULE["usage-rollup"]
    assert (entry["task"], entry["schedule"]) == (rollup.name, 60.0)
    assert DailyUsage.objects.get().cost_usd == Decimal("0.5")
