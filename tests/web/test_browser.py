"""The web app in a real Chromium against a real server, worker, PostgreSQL and Redis.

Embeddings come from ``scripted:hash`` and answers from ``scripted:echo``: the flows
are the product's own, only the models are deterministic (and quick to load).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, BrowserContext, Page, expect

from aistack.accounts.models import Membership, Role, Workspace
from aistack.accounts.services import user_create
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.chat.models import ChatMessage, Conversation
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update
from aistack.jobs.kinds import JobStatus
from aistack.retrieval.answers import DONT_KNOW
from tests.browser import context_for, screenshot
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
DEPLOYS = "Deploys happen on Tuesdays. Rollbacks need a second reviewer."


@pytest.fixture
def models(use_models: Callable[..., None], scripted_chat: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


def settled(document: Document) -> bool:
    document.refresh_from_db()
    return (document.embedding_status == JobStatus.COMPLETE
            and document.summary_status == JobStatus.COMPLETE)


def badge(page: Page, document: Document, kind: str) -> Any:
    return page.locator(f'.badge[data-document="{document.pk}"][data-kind="documents.{kind}"]')


def test_log_in_write_a_document_and_watch_its_statuses_change_live(
    models: None, celery_worker: Any, asgi_url: str, alice: User, browser: Browser,
    scripted_chat: Callable[..., None], request: pytest.FixtureRequest,
) -> None:
    scripted_chat(latency=1.0)
    scripted.script("echo", Reply(text="Deploys are on Tuesdays, with reviewed rollbacks."),
                    Reply(text="Deploys are on Tuesdays; hotfixes skip the queue."))
    context = browser.new_context()
    page = context.new_page()

    page.goto(f"http://{asgi_url}/documents/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/documents/$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please enter a correct username and password")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Documents")).to_be_visible()

    page.get_by_role("link", name="New document").click()
    page.get_by_role("button", name="Create document").click()
    expect(page.get_by_text("This field is required.").first).to_be_visible()
    page.get_by_label("Title").fill("Deploys")
    page.get_by_label("Content").fill(DEPLOYS)
    page.get_by_role("button", name="Create document").click()

    document = Document.objects.get(title="Deploys")
    expect(page).to_have_url(f"http://{asgi_url}/documents/{document.pk}/")
    page.evaluate("window.sameDocument = true")
    expect(page.get_by_text("Generating summary…")).to_be_visible()
    screenshot(page, request, "-before")
    expect(page.locator("#summary-text")).to_have_text(
        "Deploys are on Tuesdays, with reviewed rollbacks.", timeout=20_000)
    # The passages come in when indexing ends, with an anchor each.
    chunk = document.chunks.get()
    expect(page.locator(f"#chunk-{chunk.pk}")).to_contain_text("Rollbacks need a second")
    expect(badge(page, document, "index")).to_have_text("Complete")
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, request, "-document")

    page.get_by_role("link", name="Documents").click()
    expect(badge(page, document, "summary")).to_have_text("Complete")
    page.evaluate("window.sameDocument = true")
    document_update(document=Document.objects.get(pk=document.pk),
                    content=DEPLOYS + " Hotfixes skip the queue.")

    expect(badge(page, document, "summary")).to_have_text(re.compile("Pending|Processing"),
                                                          timeout=10_000)
    screenshot(page, request, "-list-working")
    expect(badge(page, document, "summary")).to_have_text("Complete", timeout=20_000)
    expect(badge(page, document, "index")).to_have_text("Complete")
    expect(page.locator("#announcer")).to_contain_text("of Deploys finished")
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, request)

    # On a phone the layout reflows instead of scrolling sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, request, "-phone")
    context.close()


def test_search_then_ask_a_question_and_watch_the_cited_answer_stream_in(
    models: None, clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    use_models: Callable[..., None], request: pytest.FixtureRequest,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Deploys", DEPLOYS)
    chunk = document.chunks.get()
    page = logged_in.new_page()

    page.goto(f"http://{asgi_url}/search/")
    page.get_by_label("Search for").fill("who reviews rollbacks")
    page.get_by_role("button", name="Search").click()
    result = page.locator(".results li").first
    expect(result.locator("mark").first).to_be_visible()
    expect(result.get_by_role("link", name="Deploys")).to_have_attribute(
        "href", f"/documents/{document.pk}/#chunk-{chunk.pk}")
    page.get_by_label("Exact words").check()
    expect(page).to_have_url(re.compile(r"mode=text"))
    expect(page.get_by_role("heading", name=re.compile(r"1 passage for"))).to_be_visible()
    screenshot(page, request, "-search")
    result.get_by_role("link", name="Deploys").click()
    expect(page.locator(f"#chunk-{chunk.pk}")).to_be_visible()
    assert page.evaluate("location.hash") == f"#chunk-{chunk.pk}"

    answer = "Deploys happen on Tuesdays [1]. Every rollback needs a second reviewer [1]."
    scripted.script("echo", Reply(text=answer, chunk_delay=0.15))
    page.goto(f"http://{asgi_url}/ask/")
    page.get_by_label("Your question").fill("On which day do deploys happen?")
    page.get_by_role("button", name="Ask").click()
    lengths = []
    deadline = time.monotonic() + 15
    while page.locator("#answer").get_attribute("data-state") != "done":
        lengths.append(len(page.locator("#answer-text").text_content() or ""))
        assert time.monotonic() < deadline, "the answer never finished"
        time.sleep(0.05)
    grown = sorted(set(lengths) - {0})
    # Words arrive 150 ms apart: a streamed answer is seen at many lengths on its way.
    assert len(grown) >= 4, lengths
    assert lengths == sorted(lengths)
    assert grown[0] < len(answer) / 2
    expect(page.locator("#answer-text")).to_have_text(answer)
    expect(page.locator("#answer-text a.cite").first).to_have_attribute("href", "#citation-1")
    source = page.locator("#citation-1 a")
    expect(source).to_have_attribute("href", f"/documents/{document.pk}/#chunk-{chunk.pk}")
    expect(source).to_have_text("Deploys")
    expect(page.locator("#answer-model")).to_have_text("Answered by scripted:echo.")
    expect(page.locator("#answer-extractive")).to_be_hidden()
    expect(page.locator("#answer-unknown")).to_be_hidden()
    screenshot(page, request, "-answer")

    page.get_by_label("Your question").fill("What is the boiling point of tungsten?")
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#answer-unknown")).to_be_visible()
    expect(page.locator("#answer-text")).to_have_text(DONT_KNOW)
    expect(page.locator("#answer-model")).to_contain_text("No model was asked")
    expect(page.locator("#sources")).to_be_hidden()
    screenshot(page, request, "-unknown")

    use_models("local:extractive")
    page.get_by_label("Your question").fill("Do rollbacks need a second reviewer?")
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#answer-extractive")).to_be_visible(timeout=30_000)
    expect(page.locator("#answer-model")).to_have_text("Answered by local:extractive.")
    expect(page.locator("#answer-text")).to_contain_text("Rollbacks need a second reviewer")
    screenshot(page, request)


def test_chat_streams_two_turns_that_are_still_there_after_a_reload(
    models: None, clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    request: pytest.FixtureRequest,
) -> None:
    scripted.script("echo",
                    Reply(text="Hello! Ask me about your team's work.", chunk_delay=0.05),
                    Reply(text="Deploys happen on Tuesdays.", chunk_delay=0.05))
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/chat/")

    page.get_by_label("Message").fill("Hi there")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".turn.assistant .text").nth(0)).to_have_text(
        "Hello! Ask me about your team's work.")
    conversation = Conversation.objects.get(user=alice)
    expect(page).to_have_url(f"http://{asgi_url}/chat/{conversation.pk}/")
    # Shown as its own page shows it, without a reload: its title, listed, and its actions.
    expect(page.get_by_role("heading", level=1)).to_have_text("Hi there")
    expect(page).to_have_title("Hi there · aistack")
    expect(page.get_by_role("navigation", name="Conversations").get_by_role(
        "link", name="Hi there")).to_have_attribute("aria-current", "page")
    expect(page.get_by_text("Rename")).to_be_visible()
    page.on("dialog", lambda dialog: dialog.dismiss())  # asked first, and declined
    page.get_by_role("button", name="Delete conversation").click()
    expect(page).to_have_url(f"http://{asgi_url}/chat/{conversation.pk}/")
    page.get_by_label("Message").fill("When do deploys happen?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".turn.assistant .text").nth(1)).to_have_text(
        "Deploys happen on Tuesdays.")
    expect(page.locator(".turn.assistant .model").nth(1)).to_have_text("scripted:echo")
    screenshot(page, request, "-streamed")

    # The second reply was asked with the whole conversation so far.
    second = scripted.calls()[-1].messages
    assert second[-3:] == ("Hi there", "Hello! Ask me about your team's work.",
                           "When do deploys happen?")
    page.reload()
    expect(page.locator(".turn .text")).to_have_text([
        "Hi there", "Hello! Ask me about your team's work.",
        "When do deploys happen?", "Deploys happen on Tuesdays.",
    ])
    expect(page.get_by_role("navigation", name="Conversations")).to_contain_text("Hi there")
    assert ChatMessage.objects.filter(conversation=conversation).count() == 4
    screenshot(page, request)


def test_a_viewer_sees_no_edit_controls_and_is_refused_an_edit(
    clean_redis: None, asgi_url: str, alice: User, bob: User, shared_workspace: Workspace,
    browser: Browser, request: pytest.FixtureRequest,
) -> None:
    document = document_create(workspace=shared_workspace, title="Team plan",
                               content="Ship on Tuesday.", author=alice)
    context = context_for(browser, asgi_url, bob)
    page = context.new_page()
    page.goto(f"http://{asgi_url}/documents/")

    page.get_by_label("Workspace").select_option(label="Team")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_text("You are now working in Team.")).to_be_visible()
    expect(page.get_by_role("link", name="Team plan")).to_be_visible()
    expect(page.get_by_role("link", name="New document")).to_have_count(0)
    expect(page.get_by_role("link", name="Upload files")).to_have_count(0)
    expect(page.get_by_role("link", name="Members")).to_have_count(0)
    page.get_by_role("link", name="Team plan").click()
    expect(page.get_by_role("heading", name="Team plan")).to_be_visible()
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    screenshot(page, request, "-document")

    status = page.evaluate("""async (url) => {
        const body = new FormData();
        body.append("title", "Hijacked");
        body.append("content", "Gone.");
        const response = await fetch(url, {method: "POST", body,
            headers: {"X-CSRFToken": window.aistack.csrfToken()}});
        return response.status;
    }""", f"/documents/{document.pk}/edit/")
    assert status == 403
    response = page.goto(f"http://{asgi_url}/documents/{document.pk}/edit/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You can't do that here")).to_be_visible()
    document.refresh_from_db()
    assert document.title == "Team plan"
    screenshot(page, request)
    context.close()


def test_an_owner_invites_changes_and_removes_a_member(
    clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    request: pytest.FixtureRequest,
) -> None:
    carol = user_create(username="carol", password=PASSWORD)
    page = logged_in.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"http://{asgi_url}/documents/")
    page.get_by_role("link", name="Members").click()
    page.evaluate("window.sameDocument = true")

    page.get_by_label("Username").fill("nobody")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("No user has this username.")).to_be_visible()
    page.get_by_label("Username").fill("carol")
    page.locator("#id_role").select_option("editor")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("Added carol as editor.")).to_be_visible()
    membership = Membership.objects.get(user=carol, workspace=alice.personal_workspace)
    assert membership.role == Role.EDITOR

    page.get_by_label("Role of carol").select_option("viewer")
    page.get_by_role("button", name="Change role of carol").click()
    expect(page.get_by_text("carol is now viewer.")).to_be_visible()
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER
    screenshot(page, request, "-changed")

    page.get_by_role("button", name="Remove carol").click()
    expect(page.get_by_text("Removed carol.")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("carol"))).to_have_count(0)
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, request)


def test_a_missing_page_is_a_friendly_404(
    clean_redis: None, asgi_url: str, logged_in: BrowserContext, request: pytest.FixtureRequest,
) -> None:
    page = logged_in.new_page()

    response = page.goto(f"http://{asgi_url}/documents/999999/")

    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="We couldn't find that page")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    page.get_by_role("link", name="Go to the start page").click()
    expect(page.get_by_role("heading", name="Documents")).to_be_visible()
    screenshot(page, request)
