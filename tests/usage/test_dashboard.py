"""The usage dashboard: staff's in the admin, owners' in the app, drawn in Chromium."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, Page

from aistack.accounts.models import Workspace
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.usage.models import Outcome
from aistack.usage.rollups import usage_rollup
from aistack.usage.services import cache_lookups_record
from aistack.usage.types import Usage
from tests.browser import context_for, screenshot
from tests.usage.conftest import ledger_row

CHARTS = ["chart-cost-feature", "chart-cost-model", "chart-tokens-feature", "chart-tokens-model",
          "chart-latency", "chart-cache"]


def _seed(alice: User, bob: User, team: Workspace) -> None:
    """Two weeks of calls: three features, three models, two users, three workspaces."""
    now = timezone.now()
    plan = [("summary", "openai", "gpt-4.1-mini", 900, None),
            ("ask", "openai", "gpt-4.1", 2400, 700),
            ("chat", "anthropic", "claude-haiku-4-5", 1300, 300)]
    for day in range(14):
        for n, (feature, provider, model, latency, ttft) in enumerate(plan):
            for user, workspace in ((alice, alice.personal_workspace.pk), (bob, team.pk),
                                    (bob, bob.personal_workspace.pk)):
                ledger_row(user=user, workspace_id=workspace, feature=feature, provider=provider,
                           model=model, at=now - timedelta(days=day, minutes=n),
                           latency_ms=latency + 37 * day + 11 * n, ttft_ms=ttft,
                           usage=Usage(input_tokens=1200 + 50 * day, output_tokens=300),
                           cost=f"{0.002 * (n + 1) + 0.0003 * day:.6f}")
    ledger_row(user=bob, workspace_id=team.pk, feature="ask", outcome=Outcome.ERROR,
               latency_ms=30_000, error_class="Timeout", cost="0", usage=Usage())
    cache_lookups_record(cache="summary", feature="summary",
                         workspace_id=alice.personal_workspace.pk, hits=40, misses=10)
    cache_lookups_record(cache="query_vector", feature="ask", workspace_id=team.pk,
                         hits=12, misses=18)
    document = document_create(workspace=alice.personal_workspace, title="Runbook",
                               content="Restart the service.", author=alice)
    Job.objects.filter(object_id=document.pk, kind="documents.summary").update(
        status=JobStatus.FAILED, finished_at=now,
        last_error="The AI model is unavailable right now; try again shortly.")
    usage_rollup()


@pytest.mark.django_db(transaction=True)
def test_staff_see_every_workspace_in_the_admin(
    alice: User, bob: User, shared_workspace: Workspace, staff: User,
) -> None:
    _seed(alice, bob, shared_workspace)
    client = Client()
    client.force_login(staff)

    index = client.get("/admin/")
    page = client.get("/admin/usage/usagedashboard/")

    assert b'href="/admin/usage/usagedashboard/"' in index.content
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("alice", "bob", shared_workspace.name, "openai:gpt-4.1", "documents.summary",
                 "The AI model is unavailable right now", "Timeout", "30000 ms"):
        assert text in html
    assert page.context["dashboard"].totals.calls == 14 * 9 + 1


@pytest.mark.django_db(transaction=True)
def test_owners_see_only_their_workspaces_in_the_app(
    alice: User, bob: User, shared_workspace: Workspace,
) -> None:
    _seed(alice, bob, shared_workspace)
    client = Client()

    assert client.get("/usage/").status_code == 302
    client.force_login(bob)
    bobs = client.get("/usage/")
    client.force_login(alice)
    alices = client.get("/usage/")
    only_team = client.get("/usage/", {"workspace": shared_workspace.pk})
    backwards = client.get("/usage/", {"since": "2026-02-02", "until": "2026-02-01"})

    assert bobs.context["dashboard"].totals.calls == 14 * 3
    assert alices.context["dashboard"].totals.calls == 14 * 6 + 1
    assert {row.key for row in alices.context["dashboard"].top_workspaces} == {
        alice.personal_workspace.slug, shared_workspace.slug}
    assert only_team.context["dashboard"].totals.calls == 14 * 3 + 1
    assert "must not be after" in backwards.content.decode()


def _open(browser: Browser, asgi_url: str, user: User, path: str) -> Page:
    context = context_for(browser, asgi_url, user, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"http://{asgi_url}{path}")
    return page


def _drawn(page: Page) -> dict[str, int]:
    """Return how many data points each chart holds, as Chart.js drew them."""
    counts: dict[str, int] = page.evaluate("""ids => Object.fromEntries(ids.map(id => {
        const chart = Chart.getChart(document.getElementById(id));
        return [id, chart ? chart.data.datasets.reduce(
            (n, set) => n + set.data.filter(v => v !== null && v !== 0).length, 0) : -1];
    }))""", CHARTS)
    return counts


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_draws_its_charts_in_a_browser(
    asgi_url: str, alice: User, bob: User, shared_workspace: Workspace, staff: User,
    browser: Browser, request: pytest.FixtureRequest,
) -> None:
    _seed(alice, bob, shared_workspace)

    admin_page = _open(browser, asgi_url, staff, "/admin/usage/usagedashboard/")
    admin_charts = _drawn(admin_page)
    screenshot(admin_page, request, "-admin")
    owner_page = _open(browser, asgi_url, bob, "/usage/")
    owner_charts = _drawn(owner_page)
    screenshot(owner_page, request, "-owner")

    # 14 days of 3 features (and of 3 models), stacked; p50 and p95 of 4 feature-model
    # pairs (the failed call is a pair of its own), first token of 2 of them; 2 caches.
    assert admin_charts == {"chart-cost-feature": 42, "chart-cost-model": 42,
                            "chart-tokens-feature": 42, "chart-tokens-model": 42,
                            "chart-latency": 4 * 2 + 2 * 2, "chart-cache": 2}
    assert owner_charts["chart-cost-feature"] == 42
    assert owner_page.locator("#usage-top-users").inner_text().count("alice") == 0
    assert "bob" in owner_page.locator("#usage-top-users").inner_text()
    assert owner_page.locator("#usage-total-calls").inner_text() == str(14 * 3)
