"""A call over several workspaces' data is charged to each of them: shares in the ledger,
each workspace's budget checked before the call."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from aistack.accounts.models import Role, Workspace
from aistack.accounts.services import membership_set, workspace_create
from aistack.usage.budgets import OverBudget, budget_reserve, budget_settle
from aistack.usage.models import Budget, UsageRecord
from aistack.usage.types import Attribution
from tests.ai import vendors
from tests.ai.vendors import VendorServer
from tests.conftest import ApiClient, client_for
from tests.retrieval.helpers import indexed

QUESTION = "refund policy for damaged goods"
PASSAGE = "The refund policy for damaged goods: a full refund within 30 days."

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(alice: User, bob: User) -> Workspace:
    """Bob's workspace, where alice writes too; both it and alice's own hold the answer."""
    workspace = workspace_create(owner=bob, name="Support")
    membership_set(workspace=workspace, user=alice, role=Role.EDITOR)
    for place in (workspace, alice.personal_workspace):
        indexed(place, alice, "Refunds", PASSAGE)
    return workspace


def _answer(vendor: VendorServer) -> None:
    vendor.push(vendors.openai_chat("A full refund within 30 days [1].",
                                    input_tokens=301, output_tokens=40))


def test_an_ask_over_all_workspaces_is_split_between_them(
    alice: User, bob: User, alice_api: ApiClient, team: Workspace, priced_chat: VendorServer,
) -> None:
    _answer(priced_chat)

    answered = alice_api.post("/api/v1/ask", {"question": QUESTION})

    assert answered.status_code == 200, answered.content
    assert answered.json()["citations"]
    shares = list(UsageRecord.objects.filter(feature="ask", provider="openai")
                  .order_by("share_index").values_list("workspace_id", "share_index",
                                                       "input_tokens", "cost_usd"))
    assert sorted(w for w, *_ in shares) == sorted([team.pk, alice.personal_workspace.pk])
    assert [index for _, index, *_ in shares] == [0, 1]
    # Tokens and cost split evenly, the odd token on the first share; nothing lost.
    assert [tokens for *_, tokens, _ in shares] == [151, 150]
    assert shares[0][3] > 0 and abs(shares[0][3] - shares[1][3]) <= Decimal("0.00000001")

    # The team's owner sees the call, at its share; staff see one call at its whole cost.
    bob_rows = client_for(bob).get("/api/v1/usage", {"group_by": "feature"}).json()["rows"]
    [bob_ask] = [row for row in bob_rows if row["key"] == "ask"]
    team_share = next(cost for w, _, _, cost in shares if w == team.pk)
    assert Decimal(str(bob_ask["cost_usd"])) == team_share
    staff = client_for(User.objects.create_superuser("root", password=None))
    everyone = staff.get("/api/v1/usage", {"group_by": "feature"}).json()["rows"]
    [ask] = [row for row in everyone if row["key"] == "ask"]
    # Two calls (the question's embedding, then the answer), each in two shares.
    asks = UsageRecord.objects.filter(feature="ask")
    assert (asks.count(), asks.filter(share_index=0).count()) == (4, 2)
    assert ask["calls"] == 2
    assert Decimal(str(ask["cost_usd"])) == sum(cost for *_, cost in shares)
    assert ask["input_tokens"] == 301 + sum(asks.exclude(provider="openai")
                                            .values_list("input_tokens", flat=True))


def test_an_ask_is_refused_when_any_workspace_it_reads_has_spent_its_budget(
    alice: User, alice_api: ApiClient, team: Workspace, priced_chat: VendorServer,
) -> None:
    Budget.objects.create(workspace=team, monthly_limit_usd=Decimal(0))
    _answer(priced_chat)

    everywhere = alice_api.post("/api/v1/ask", {"question": QUESTION})
    own = alice_api.post("/api/v1/ask", {"question": QUESTION,
                                         "workspace": alice.personal_workspace.pk})

    assert everywhere.status_code == 429
    assert everywhere.json()["error"]["code"] == "budget_exceeded"
    # Asked of her own workspace alone, the team's budget is not hers to spend.
    assert own.status_code == 200
    assert len(priced_chat.received) == 1


def test_a_budget_holds_a_workspace_to_its_share(alice: User, team: Workspace) -> None:
    estimate = Decimal("0.01")
    Budget.objects.create(workspace=team, monthly_limit_usd=estimate * Decimal("0.75"))
    shared = Attribution(feature="ask", user_id=alice.pk,
                         workspace_ids=(team.pk, alice.personal_workspace.pk))

    reservation = budget_reserve(attribution=shared, estimate=estimate)

    # Half of the estimate is the team's: it fits where the whole would not.
    assert reservation is not None
    assert reservation.workspaces == 2
    with pytest.raises(OverBudget):
        budget_reserve(attribution=Attribution(feature="ask", user_id=alice.pk,
                                               workspace_id=team.pk), estimate=estimate)
    budget_settle(reservation=reservation, cost=estimate)
    with pytest.raises(OverBudget):  # the team has spent its half
        budget_reserve(attribution=shared, estimate=estimate)


def test_a_search_of_every_workspace_is_recorded_for_each(
    alice: User, alice_api: ApiClient, team: Workspace, priced_chat: VendorServer,
) -> None:
    found = alice_api.get("/api/v1/search", {"q": QUESTION, "mode": "hybrid"})

    assert found.status_code == 200
    embedded = UsageRecord.objects.filter(feature="search")
    assert sorted(embedded.values_list("workspace_id", flat=True)) == sorted(
        [team.pk, alice.personal_workspace.pk])
