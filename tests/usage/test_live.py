"""Usage reads include every call committed before them, without waiting on a rollup run."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from aistack.usage.models import UsageRecord
from aistack.usage.rollups import _LOCK_ID, one_snapshot, usage_rollup
from aistack.usage.selectors import GroupBy, usage_period, usage_report
from harness import clean_env, run_aistack
from tests.ai import vendors
from tests.ai.vendors import VendorServer
from tests.conftest import ApiClient
from tests.e2e.test_worker_kill import database_url_of_test_db
from tests.usage.conftest import ledger_row

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        try:
            return call()
        finally:
            connections.close_all()
    return run


@pytest.mark.e2e
def test_a_call_is_read_back_at_once_by_the_api_the_page_and_the_cli(
    alice: User, alice_api: ApiClient, priced_chat: VendorServer, tmp_path: Path
) -> None:
    priced_chat.push(vendors.openai_chat("The first answer.", input_tokens=900),
                     vendors.openai_chat("The second answer.", input_tokens=1200))
    assert alice_api.post("/api/v1/chat", {"prompt": "First question"}).status_code == 200
    usage_rollup()  # the first call is in the rollups, the second only in the ledger
    assert alice_api.post("/api/v1/chat", {"prompt": "Second question"}).status_code == 200
    cost = sum(UsageRecord.objects.filter(feature="chat").values_list("cost_usd", flat=True),
               Decimal(0))
    assert UsageRecord.objects.filter(feature="chat").count() == 2 and cost > 0
    page = Client()
    page.force_login(alice)
    env = clean_env(AISTACK_HOME=str(tmp_path), DATABASE_URL=database_url_of_test_db(),
                    REDIS_URL=settings.REDIS_URL, COLUMNS="120")

    with ThreadPoolExecutor(3) as pool:
        api = pool.submit(_in_thread(lambda: alice_api.get("/api/v1/usage",
                                                           {"group_by": "feature"})))
        html = pool.submit(_in_thread(lambda: page.get("/usage/")))
        cli = pool.submit(run_aistack, "usage", "--group-by", "feature", env=env)

    [row] = api.result().json()["rows"]  # type: ignore[attr-defined]
    assert (row["key"], row["calls"]) == ("chat", 2)
    assert Decimal(str(row["cost_usd"])) == cost
    text = html.result().content.decode()  # type: ignore[attr-defined]
    assert re.search(r'id="usage-total-calls">2<', text)
    assert f'id="usage-total-cost">${cost:.4f}<' in text
    [chat] = [line for line in cli.result().splitlines() if line.startswith("│ chat")]
    assert chat.split("│")[2].strip() == "2"
    assert f"{cost:.6f}" in chat


def test_rollups_and_the_tail_add_up_without_counting_a_call_twice(alice: User) -> None:
    alice_ws = alice.personal_workspace.pk
    ledger_row(user=alice, workspace_id=alice_ws, cost="0.5")
    before = usage_report(period=usage_period(), group_by=GroupBy.FEATURE, workspace_ids=None)
    usage_rollup()
    rolled = usage_report(period=usage_period(), group_by=GroupBy.FEATURE, workspace_ids=None)
    ledger_row(user=alice, workspace_id=alice_ws, cost="0.25")
    both = usage_report(period=usage_period(), group_by=GroupBy.FEATURE,
                        workspace_ids=[alice_ws])

    assert [(r.calls, r.cost_usd) for r in before] == [(1, Decimal("0.5"))]
    assert [(r.calls, r.cost_usd) for r in rolled] == [(1, Decimal("0.5"))]
    assert [(r.calls, r.cost_usd) for r in both] == [(2, Decimal("0.75"))]


def test_a_read_does_not_wait_for_a_run_nor_a_run_for_a_read(alice: User) -> None:
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, cost="0.5")
    usage_rollup()
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, cost="0.25")

    # A run under way holds the lock (here, from another connection): reads go on.
    other = connections.create_connection("default")
    try:
        with other.cursor() as run:
            run.execute("SELECT pg_advisory_lock(%s)", [_LOCK_ID])
            try:
                with ThreadPoolExecutor(1) as pool:
                    read = pool.submit(_in_thread(lambda: usage_report(
                        period=usage_period(), group_by=GroupBy.DAY, workspace_ids=None)))
                    rows = read.result(timeout=20)
            finally:
                # Pooled: closing would hand the connection back with the lock still held.
                run.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])
    finally:
        other.close()
    assert [(r.calls, r.cost_usd) for r in rows] == [(2, Decimal("0.75"))]  # type: ignore[attr-defined]

    # A read holding its snapshot open: a run goes on, and the read still adds up.
    opened, finish = threading.Event(), threading.Event()

    def long_read() -> object:
        with one_snapshot(read_only=True):
            first = usage_report(period=usage_period(), group_by=GroupBy.DAY, workspace_ids=None)
            opened.set()
            finish.wait(20)
            again = usage_report(period=usage_period(), group_by=GroupBy.DAY, workspace_ids=None)
        return first, again

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_in_thread(long_read))
        assert opened.wait(20)
        with ThreadPoolExecutor(1) as runner:
            run_done = runner.submit(_in_thread(usage_rollup))
            assert run_done.result(timeout=20).days  # type: ignore[attr-defined]
        finish.set()
        first, again = reading.result(timeout=20)  # type: ignore[misc]
    assert [(r.calls, r.cost_usd) for r in first] == [(r.calls, r.cost_usd) for r in again]
