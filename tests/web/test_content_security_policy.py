"""The Content-Security-Policy: sent with every page, and nothing the pages do runs into it.

Chromium reports whatever a policy blocks as a ``securitypolicyviolation`` event and as a
console message. The browser tests keep both while they use the pages as people do (htmx
forms, streamed answers, the charts, the admin's widgets, the API reference) and expect
none; then they inject an inline script, an event handler and a style into a page, which
would work without the policy, and expect each to be refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from aistack.accounts.models import Membership
from aistack.accounts.services import user_create
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.documents.models import Document
from aistack.documents.services import document_update
from aistack.usage.models import Budget
from aistack.usage.rollups import usage_rollup
from aistack.usage.services import cache_lookups_record
from aistack.usage.types import Usage
from tests.browser import context_for, screenshot
from tests.retrieval.helpers import indexed
from tests.usage.conftest import ledger_row

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
POLICY = {
    "default-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
CHARTS = ["chart-cost-feature", "chart-cost-model", "chart-tokens-feature",
          "chart-tokens-model", "chart-latency", "chart-cache"]

# Kept in sessionStorage, so that what a page reported outlives the navigation away from it.
RECORD_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (event) => {
    const seen = JSON.parse(sessionStorage.getItem("csp-violations") || "[]");
    seen.push(`${location.pathname}: ${event.effectiveDirective} refused`
              + ` ${event.blockedURI || "?"} (${event.sourceFile}:${event.lineNumber})`);
    sessionStorage.setItem("csp-violations", JSON.stringify(seen));
});"""


def directives(header: str | None) -> dict[str, str]:
    """Return a policy's directives by name (their order in the header means nothing)."""
    assert header, "no Content-Security-Policy header"
    parts = (part.strip().partition(" ") for part in header.split(";"))
    return {name: value for name, _, value in parts}


class Violations:
    """What the policy refused in a browser context's pages, as Chromium reports it."""

    def __init__(self, context: BrowserContext) -> None:
        self.console: list[str] = []
        context.add_init_script(RECORD_VIOLATIONS)
        context.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def reported(self, page: Page) -> list[str]:
        """Return every violation so far, once the page has run its pending tasks."""
        events: list[str] = page.evaluate("""() => new Promise(resolve => setTimeout(() =>
            resolve(JSON.parse(sessionStorage.getItem("csp-violations") || "[]"))))""")
        return events + self.console


def seed_usage(user: User) -> None:
    """A few days of calls and cache reads in ``user``'s workspace: every chart has data."""
    now = timezone.now()
    for day in range(5):
        for feature, model, ttft in (("ask", "gpt-4.1", 400), ("summary", "gpt-4.1-mini", None)):
            ledger_row(user=user, workspace_id=user.personal_workspace.pk, feature=feature,
                       model=model, at=now - timedelta(days=day), latency_ms=900 + 40 * day,
                       ttft_ms=ttft, usage=Usage(input_tokens=1200 + 90 * day, output_tokens=300),
                       cost=f"{0.002 + 0.0004 * day:.6f}")
    cache_lookups_record(cache="summary", feature="summary",
                         workspace_id=user.personal_workspace.pk, hits=40, misses=10)
    usage_rollup()


def charts_drawn(page: Page) -> list[str]:
    """Return the ids of the charts Chart.js drew on the page."""
    drawn: list[str] = page.evaluate(
        "ids => ids.filter(id => Chart.getChart(document.getElementById(id)))", CHARTS)
    return drawn


@pytest.fixture
def root(db: None) -> User:
    return user_create(username="root", password=PASSWORD, is_staff=True)


@pytest.fixture
def models(use_models: Callable[..., None], scripted_chat: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


def test_pages_admin_and_errors_carry_the_policy(
    models: None, clean_redis: None, alice: User, root: User,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Deploys", "Deploys are on Tuesdays.")
    anonymous, member, staff = Client(), Client(), Client()
    member.force_login(alice)
    staff.force_login(root)
    pages = [
        (anonymous, "/login/", 200),
        (anonymous, "/admin/login/", 200),
        (member, "/documents/", 200),
        (member, f"/documents/{document.pk}/", 200),
        (member, "/search/?q=deploys", 200),
        (member, "/ask/", 200),
        (member, "/chat/", 200),
        (member, "/usage/", 200),
        (member, "/tokens/", 200),
        (member, "/documents/999999/", 404),
        (staff, "/admin/", 200),
        (staff, "/admin/documents/document/", 200),
        (staff, "/admin/usage/usagedashboard/", 200),
        (staff, "/api/v1/docs", 200),
    ]
    for client, path, status in pages:
        response = client.get(path)
        assert response.status_code == status, path
        assert directives(response.headers.get("Content-Security-Policy")) == POLICY, path


def test_the_app_runs_under_the_policy_without_a_violation(
    models: None, clean_redis: None, asgi_url: str, alice: User, browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Deploys",
                       "Deploys happen on Tuesdays. Rollbacks need a second reviewer.")
    indexed(alice.personal_workspace, alice, "Holidays", "The office closes in August.")
    user_create(username="carol", password=PASSWORD)
    seed_usage(alice)
    scripted.script("echo", Reply(text="Deploys happen on Tuesdays [1].", chunk_delay=0.02),
                    Reply(text="Hello! Ask me about your documents.", chunk_delay=0.02))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    violations = Violations(context)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # Signing in posts a form, then follows the redirect.
    page.goto(f"http://{asgi_url}/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Documents")).to_be_visible()

    # htmx: the list filters as one types, in place (once htmx has bound the field: on a
    # loaded machine the heading shows before the scripts have run).
    page.wait_for_load_state("load")
    page.wait_for_function("() => window.htmx !== undefined")
    page.get_by_label("Filter by title").fill("Depl")
    expect(page.locator("#document-list .count")).to_have_text(
        "1 document with “Depl” in the title", timeout=15_000)
    expect(page).to_have_url(re.compile(r"title=Depl"))

    # The document page: its statuses follow the jobs through an event stream.
    page.get_by_role("link", name="Deploys").click()
    expect(page.get_by_role("heading", name="Passages")).to_be_visible()
    index_badge = page.locator('.badge[data-kind="documents.index"]')
    expect(index_badge).to_have_text("Complete")
    document_update(document=document, content="Deploys happen on Wednesdays now.")
    expect(index_badge).to_have_text("Pending")
    screenshot(page, request, "-document")

    # htmx: search on submit, then again when the mode changes.
    page.goto(f"http://{asgi_url}/search/")
    page.get_by_label("Search for").fill("rollbacks reviewer")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".results li mark").first).to_be_visible()
    page.get_by_label("Exact words").check()
    expect(page).to_have_url(re.compile(r"mode=text"))
    expect(page.get_by_role("heading", name=re.compile(r"passages? for"))).to_be_visible()

    # A streamed answer, and a streamed chat reply (fetch, read as events).
    page.goto(f"http://{asgi_url}/ask/")
    page.get_by_label("Your question").fill("When do deploys happen?")
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=15_000)
    expect(page.locator("#citation-1 a")).to_have_text("Deploys")
    page.goto(f"http://{asgi_url}/chat/")
    page.get_by_label("Message").fill("Hi")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".turn.assistant .text")).to_have_text(
        "Hello! Ask me about your documents.")

    # htmx: members invited and removed in place, after a confirmation.
    page.goto(f"http://{asgi_url}/members/")
    page.get_by_label("Username").fill("carol")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("Added carol as")).to_be_visible()
    page.get_by_role("button", name="Remove carol").click()
    expect(page.get_by_text("Removed carol.")).to_be_visible()
    assert not Membership.objects.filter(workspace=alice.personal_workspace,
                                         user__username="carol").exists()

    # Uploads: upload.js sends the file with its progress bar, then links the new document.
    page.goto(f"http://{asgi_url}/documents/upload/")
    page.get_by_label("Choose files").set_input_files(
        {"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\n\nHello."})
    page.locator("li.upload").get_by_role("link", name=re.compile("notes", re.I)).click()
    expect(page.get_by_role("heading", name=re.compile("notes", re.I))).to_be_visible()
    assert Document.objects.filter(source_name="notes.md").exists()

    # The usage dashboard: Chart.js draws every chart.
    page.goto(f"http://{asgi_url}/usage/")
    assert charts_drawn(page) == CHARTS
    screenshot(page, request, "-usage")

    response = page.goto(f"http://{asgi_url}/documents/{document.pk + 1000}/")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="We couldn't find that page")).to_be_visible()

    refused = violations.reported(page)
    assert refused == [], "\n".join(refused)
    context.close()


def test_the_admin_and_the_api_reference_run_under_the_policy_without_a_violation(
    models: None, clean_redis: None, asgi_url: str, alice: User, root: User, browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Deploys", "Deploys are on Tuesdays.")
    seed_usage(alice)
    context = context_for(browser, asgi_url, root, viewport={"width": 1280, "height": 900})
    violations = Violations(context)
    page = context.new_page()

    page.goto(f"http://{asgi_url}/admin/")
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()

    # A change list: its action bar, filters and sidebar are scripts of the admin's own.
    page.goto(f"http://{asgi_url}/admin/documents/document/")
    page.locator("#nav-filter").fill("Budg")
    expect(page.locator("#nav-sidebar").get_by_role("link", name="Api tokens")).to_be_hidden()
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")

    # A change form: a raw-id field's lookup opens the change list in a popup.
    page.goto(f"http://{asgi_url}/admin/documents/document/{document.pk}/change/")
    with page.expect_popup() as popup:
        page.locator("#lookup_id_author").click()
    popup.value.get_by_role("link", name="alice").click()
    expect(page.locator("#id_author")).to_have_value(str(alice.pk))

    # Select2 autocompletes, in a form that saves and redirects.
    page.goto(f"http://{asgi_url}/admin/usage/budget/add/")
    page.locator("#id_workspace + .select2 .select2-selection").click()
    page.locator(".select2-search__field").fill("alice")
    page.locator(".select2-results__option", has_text="alice's workspace").click()
    page.get_by_label("Monthly limit usd").fill("25")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    assert Budget.objects.get().workspace == alice.personal_workspace

    page.goto(f"http://{asgi_url}/admin/usage/usagedashboard/")
    assert charts_drawn(page) == CHARTS
    screenshot(page, request, "-admin-usage")
    page.get_by_role("button", name="Toggle theme").first.click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")

    # The API reference (Swagger UI) reads the schema and opens an operation.
    page.goto(f"http://{asgi_url}/api/v1/docs")
    page.get_by_text("/api/v1/search", exact=True).click()
    expect(page.get_by_role("button", name="Try it out")).to_be_visible()
    page.get_by_role("button", name="Try it out").click()
    screenshot(page, request, "-api")

    refused = violations.reported(page)
    assert refused == [], "\n".join(refused)
    context.close()


def test_injected_scripts_handlers_and_styles_are_refused(
    clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
) -> None:
    violations = Violations(logged_in)
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/documents/")
    heading = "getComputedStyle(document.querySelector('h1'))"
    styled = page.evaluate(f"[{heading}.color, {heading}.letterSpacing]")

    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.injected = 'the script ran'";
        document.body.append(script);
        const image = document.createElement("img");
        image.setAttribute("onerror", "window.handled = 'the handler ran'");
        // Listeners run in the order they were added: the handler's turn comes first.
        image.addEventListener("error", () => { window.imageFailed = true; });
        image.src = "/no-such-image.png";
        document.body.append(image);
        document.querySelector("h1").setAttribute("style", "color: rgb(255, 0, 0)");
        const style = document.createElement("style");
        style.textContent = "h1 { letter-spacing: 10px; }";
        document.head.append(style);
    }""")
    page.wait_for_function("() => window.imageFailed")

    assert page.evaluate("[window.injected ?? null, window.handled ?? null]") == [None, None]
    assert page.evaluate(f"[{heading}.color, {heading}.letterSpacing]") == styled
    refused = " ".join(violations.reported(page))
    for directive in ("script-src-elem", "script-src-attr", "style-src-attr", "style-src-elem"):
        assert f"{directive} refused" in refused, refused
