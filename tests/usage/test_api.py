"""GET /api/v1/usage and `aistack usage`: grouped reports, scoped to what the caller may see."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from aistack.accounts.models import Workspace
from harness import clean_env, run_aistack
from tests.conftest import ApiClient, client_for
from tests.e2e.test_worker_kill import database_url_of_test_db
from tests.usage.conftest import ledger_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(alice: User, bob: User, shared_workspace: Workspace) -> None:
    """Calls by alice and bob: in their own workspaces, and by bob in alice's team."""
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, feature="summary",
               cost="0.30")
    ledger_row(user=alice, workspace_id=shared_workspace.pk, feature="ask", cost="0.20")
    ledger_row(user=bob, workspace_id=shared_workspace.pk, feature="ask", model="gpt-4.1",
               cost="0.10")
    ledger_row(user=bob, workspace_id=bob.personal_workspace.pk, feature="chat", cost="0.05")
    ledger_row(user=bob, workspace_id=bob.personal_workspace.pk, feature="chat", cost="0.05",
               at=timezone.now() - timedelta(days=40))


def _rows(api: ApiClient, **params: str) -> dict[str, tuple[int, Decimal]]:
    response = api.get("/api/v1/usage", params)
    assert response.status_code == 200, response.content
    return {row["key"]: (row["calls"], Decimal(str(row["cost_usd"])))
            for row in response.json()["rows"]}


def test_owners_see_the_workspaces_they_own(
    ledger: None, alice_api: ApiClient, bob_api: ApiClient, alice: User, bob: User,
) -> None:
    assert _rows(alice_api, group_by="workspace") == {
        alice.personal_workspace.slug: (1, Decimal("0.3")),
        "team": (2, Decimal("0.3")),
    }
    labels = {row["key"]: row["label"] for row in
              alice_api.get("/api/v1/usage", {"group_by": "workspace"}).json()["rows"]}
    assert labels[alice.personal_workspace.slug] == alice.personal_workspace.name
    # bob only views the team: his own workspace is all he sees the costs of.
    assert _rows(bob_api, group_by="workspace") == {
        bob.personal_workspace.slug: (1, Decimal("0.05"))}
    assert _rows(alice_api, group_by="feature") == {"summary": (1, Decimal("0.3")),
                                                    "ask": (2, Decimal("0.3"))}
    # Owners see who spends in their workspaces, bob's calls in the team included.
    assert _rows(alice_api, group_by="user") == {"alice": (2, Decimal("0.5")),
                                                 "bob": (1, Decimal("0.1"))}


def test_staff_see_everything_grouped_any_way(ledger: None, staff: User) -> None:
    api = client_for(staff)

    by_feature = api.get("/api/v1/usage", {"group_by": "feature"}).json()["rows"]
    by_model = _rows(api, group_by="model")
    by_day = api.get("/api/v1/usage", {"group_by": "day",
                                       "since": (timezone.now() - timedelta(days=60)).date()})

    # Costliest first; ask and summary cost the same, so by name.
    assert [row["key"] for row in by_feature] == ["ask", "summary", "chat"]
    assert by_feature[0] == {"key": "ask", "label": "ask", "calls": 2, "input_tokens": 200,
                             "output_tokens": 40, "cost_usd": 0.3}
    assert by_model == {"openai:gpt-4.1-mini": (3, Decimal("0.55")),
                        "openai:gpt-4.1": (1, Decimal("0.1"))}
    assert [(row["key"], row["calls"]) for row in by_day.json()["rows"]] == [
        ((timezone.now() - timedelta(days=40)).date().isoformat(), 1),
        (timezone.now().date().isoformat(), 4),
    ]


def test_the_period_is_checked(ledger: None, alice_api: ApiClient,
                               anonymous_api: ApiClient) -> None:
    today = timezone.now().date()

    backwards = alice_api.get("/api/v1/usage", {"since": today, "until": today - timedelta(1)})
    unknown = alice_api.get("/api/v1/usage", {"group_by": "colour"})

    assert backwards.status_code == 422
    assert backwards.json()["error"]["code"] == "invalid"
    assert unknown.status_code == 422
    assert anonymous_api.get("/api/v1/usage").status_code == 401


def test_days_may_be_relative_or_iso(ledger: None, alice_api: ApiClient) -> None:
    today = timezone.now().date()
    asked = {"7d": today - timedelta(days=7), "yesterday": today - timedelta(days=1),
             "48h": today - timedelta(days=2), "2w": today - timedelta(weeks=2),
             "today": today, today.isoformat(): today}

    for text, day in asked.items():
        response = alice_api.get("/api/v1/usage", {"since": text})
        assert response.status_code == 200, (text, response.json())
        assert response.json()["since"] == day.isoformat()
    # A time with an offset names the UTC day it falls on.
    late = alice_api.get("/api/v1/usage", {"since": "3d",
                                           "until": f"{today.isoformat()}T23:30:00-02:00"})
    assert late.json()["until"] == (today + timedelta(days=1)).isoformat()

    for nonsense in ("last tuesday", "7x", "99999999d", "8000w", "2026-13-01",
                     "0001-01-01T00:00+01:00", "9999-12-31T23:00-05:00"):
        refused = alice_api.get("/api/v1/usage", {"since": nonsense})
        assert refused.status_code == 422, nonsense
        assert refused.json()["error"]["code"] == "invalid"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_cli_prints_a_table_of_the_same_report(alice: User, tmp_path: Path) -> None:
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, feature="summary",
               cost="0.25")
    ledger_row(user=alice, workspace_id=alice.personal_workspace.pk, feature="ask", cost="0.5")
    env = clean_env(AISTACK_HOME=str(tmp_path), DATABASE_URL=database_url_of_test_db(),
                    REDIS_URL=settings.REDIS_URL, COLUMNS="120")

    output = run_aistack("usage", "--group-by", "feature", env=env)

    lines = [line for line in output.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["ask", "summary", "total"]
    assert "0.500000" in lines[0]
    assert "0.750000" in lines[2]
