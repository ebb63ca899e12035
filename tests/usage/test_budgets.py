"""Monthly budgets: reserved before each model call, settled after, never overspent."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from aistack.ai import chat_models
from aistack.ai.exceptions import BudgetExceeded
from aistack.ai.services import chat_complete
from aistack.ai.types import ChatRequest, Message
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.documents.summaries import DOCUMENT_SUMMARY
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.redis.connections import redis_client
from aistack.usage.budgets import (
    CHARS_PER_TOKEN,
    OverBudget,
    budget_reserve,
    budgets_reconcile,
    call_estimate_usd,
    month_of,
)
from aistack.usage.models import Budget, Outcome, UsageRecord
from aistack.usage.types import Attribution
from harness import wait_for
from tests.ai import vendors
from tests.ai.vendors import VendorServer
from tests.conftest import ApiClient
from tests.usage.conftest import ledger_row

QUESTION = "What does our refund policy say about damaged goods?"
ANSWER_TOKENS = 50


def _request() -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=QUESTION),),
                       max_output_tokens=ANSWER_TOKENS)


def _call_cost() -> Decimal:
    """What one call costs: answers are canned to cost exactly what the budget reserves."""
    model = chat_models["default"]
    return call_estimate_usd(served_by=[(model.provider, model.model)],
                             input_chars=len(QUESTION), output_tokens=ANSWER_TOKENS)


def _answers(vendor: VendorServer, n: int, *, delay: float = 0.0) -> None:
    for _ in range(n):
        canned = vendors.openai_chat("Damaged goods are refunded in full.",
                                     input_tokens=math.ceil(len(QUESTION) / CHARS_PER_TOKEN),
                                     output_tokens=ANSWER_TOKENS)
        canned.delay = delay
        vendor.push(canned)


def _totals(scope: str, owner_id: int) -> dict[str, Decimal]:
    """Return a budget's running totals for this month, in USD."""
    key = f"aistack:budget:{scope}:{owner_id}:{month_of(timezone.now()):%Y-%m}"
    return {field.decode(): Decimal(int(value)) / 10**9
            for field, value in redis_client().hgetall(key).items() if field != b"touched"}


def _budget_keys() -> list[bytes]:
    return list(redis_client().scan_iter(match="aistack:budget:*"))


def _ask(alice: User) -> None:
    chat_complete(request=_request(), attribution=Attribution(
        feature="chat", user_id=alice.pk, workspace_id=alice.personal_workspace.pk))


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_calls_against_a_budget_for_ten_charge_at_most_eleven(
    alice: User, priced_chat: VendorServer,
) -> None:
    workspace = alice.personal_workspace
    cost = _call_cost()
    assert cost > 0
    Budget.objects.create(workspace=workspace, monthly_limit_usd=cost * 10)
    # Slow answers: every call is in flight before the first one settles.
    _answers(priced_chat, 50, delay=0.5)

    def call(_: int) -> str:
        try:
            _ask(alice)
        except BudgetExceeded:
            return "refused"
        finally:
            connection.close()
        return "answered"

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(call, range(50)))

    charged = UsageRecord.objects.filter(workspace=workspace, outcome=Outcome.OK, cost_usd__gt=0)
    assert 10 <= charged.count() <= 11
    assert outcomes.count("answered") == charged.count() == len(priced_chat.received)
    assert outcomes.count("refused") == 50 - charged.count()
    totals = _totals("workspace", workspace.pk)
    assert totals["reserved"] == 0
    assert totals["spent"] == sum(row.cost_usd for row in charged) <= cost * 11


def test_an_exhausted_budget_answers_429_without_calling_the_model(
    alice: User, alice_api: ApiClient, priced_chat: VendorServer,
) -> None:
    Budget.objects.create(workspace=alice.personal_workspace, monthly_limit_usd=Decimal(0))

    plain = alice_api.post("/api/v1/chat", {"prompt": QUESTION})
    streamed = alice_api.post("/api/v1/chat", {"prompt": QUESTION, "stream": True})

    for response in (plain, streamed):
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["message"].startswith("This workspace has used up this month's AI budget")
    assert priced_chat.received == []
    assert not UsageRecord.objects.exists()


def test_the_default_user_budget_applies_to_everyone(
    alice: User, alice_api: ApiClient, priced_chat: VendorServer, settings: Any,
) -> None:
    settings.AI_USER_MONTHLY_BUDGET_USD = Decimal("0.0001")

    response = alice_api.post("/api/v1/chat", {"prompt": QUESTION})

    assert response.status_code == 429
    assert response.json()["error"]["message"].startswith(
        "You have used up this month's AI budget; it renews on ")
    assert _budget_keys() == [f"aistack:budget:user:{alice.pk}:{month_of(timezone.now()):%Y-%m}"
                              .encode()]


def test_an_override_without_a_limit_lifts_the_default(
    alice: User, priced_chat: VendorServer, settings: Any,
) -> None:
    settings.AI_WORKSPACE_MONTHLY_BUDGET_USD = Decimal(0)
    Budget.objects.create(workspace=alice.personal_workspace, monthly_limit_usd=None)
    _answers(priced_chat, 1)

    _ask(alice)

    assert len(priced_chat.received) == 1
    assert _budget_keys() == []


def test_models_without_a_price_are_never_refused(
    alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None], settings: Any,
) -> None:
    settings.AI_WORKSPACE_MONTHLY_BUDGET_USD = Decimal(0)

    response = alice_api.post("/api/v1/chat", {"prompt": "Hello"})

    assert response.status_code == 200
    assert _budget_keys() == []


def test_this_months_ledger_counts_when_a_budget_is_first_checked(
    alice: User, priced_chat: VendorServer,
) -> None:
    workspace = alice.personal_workspace
    cost = _call_cost()
    # Spent before the budget existed: this month's counts, last month's does not.
    ledger_row(user=alice, workspace_id=workspace.pk, cost=str(cost * 2))
    ledger_row(user=alice, workspace_id=workspace.pk, cost="100",
               at=timezone.now().replace(day=1) - timedelta(days=1))
    Budget.objects.create(workspace=workspace, monthly_limit_usd=cost * 3)
    _answers(priced_chat, 2)

    _ask(alice)
    with pytest.raises(BudgetExceeded):
        _ask(alice)

    assert _totals("workspace", workspace.pk) == {"spent": cost * 3, "reserved": 0}


@pytest.mark.django_db(transaction=True)
def test_spending_survives_a_redis_flush(
    alice: User, priced_chat: VendorServer, clean_redis: None,
) -> None:
    Budget.objects.create(workspace=alice.personal_workspace, monthly_limit_usd=_call_cost())
    _answers(priced_chat, 2)
    _ask(alice)

    from aistack.celery import app as celery_app

    with celery_app.connection_for_write() as broker:
        broker.default_channel.client.flushall()

    with pytest.raises(BudgetExceeded):
        _ask(alice)
    assert len(priced_chat.received) == 1


def test_estimates_left_by_a_dead_call_are_freed_from_the_ledger(alice: User) -> None:
    workspace = alice.personal_workspace
    Budget.objects.create(workspace=workspace, monthly_limit_usd=Decimal("1"))
    ledger_row(user=alice, workspace_id=workspace.pk, cost="0.25")
    attribution = Attribution(feature="chat", workspace_id=workspace.pk)
    # Reserved, then the process died: never settled.
    assert budget_reserve(attribution=attribution, estimate=Decimal("0.7")) is not None
    with pytest.raises(OverBudget):
        budget_reserve(attribution=attribution, estimate=Decimal("0.1"))

    assert budgets_reconcile(idle_seconds=60) == 0
    key = f"aistack:budget:workspace:{workspace.pk}:{month_of(timezone.now()):%Y-%m}"
    redis_client().hset(key, "touched", int(time.time()) - 300)
    assert budgets_reconcile(idle_seconds=60) == 1

    assert _totals("workspace", workspace.pk) == {"spent": Decimal("0.25"), "reserved": 0}
    assert budget_reserve(attribution=attribution, estimate=Decimal("0.7")) is not None


def test_a_job_over_budget_is_parked_as_failed_with_the_reason(
    celery_worker: Any, alice: User, priced_chat: VendorServer,
) -> None:
    Budget.objects.create(workspace=alice.personal_workspace, monthly_limit_usd=Decimal(0))

    document = document_create(workspace=alice.personal_workspace, title="Refunds",
                               content="Damaged goods are refunded in full.", author=alice)

    wait_for(lambda: Document.objects.get(pk=document.pk).summary_status == JobStatus.FAILED,
             message="the summary job to fail")
    document.refresh_from_db()
    assert "used up this month's AI budget" in document.summary_error
    job = Job.objects.get(kind=DOCUMENT_SUMMARY.name, object_id=document.pk)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
    assert priced_chat.received == []


def test_a_call_meets_only_its_own_workspaces_and_users_budgets(
    alice: User, bob: User, priced_chat: VendorServer,
) -> None:
    Budget.objects.create(user=bob, monthly_limit_usd=Decimal(0))
    Budget.objects.create(workspace=bob.personal_workspace, monthly_limit_usd=Decimal(0))
    _answers(priced_chat, 1)

    # A call on behalf of no user (a job's, say) is not held to anybody's budget.
    chat_complete(request=_request(), attribution=Attribution(
        feature="summary", workspace_id=alice.personal_workspace.pk))

    assert len(priced_chat.received) == 1
