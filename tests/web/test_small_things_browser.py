"""Small things a newcomer found, each seen in a real Chromium against a real server."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Dialog, Page, expect

from aistack.accounts.models import Workspace
from aistack.chat.models import Author, ChatMessage, Conversation
from aistack.chat.services import conversation_start
from aistack.documents.services import document_create
from aistack.web.documents import DOCUMENTS_PER_PAGE
from tests.browser import context_for, screenshot
from tests.retrieval.helpers import indexed
from tests.usage.conftest import ledger_row

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}
# What a first message pasted as one long word (a URL, a stack trace) is titled after.
LONG_WORD = "https://ci.example.com/pipelines/" + "x" * 80
DEPLOYS = "Deploys happen on Tuesdays. Rollbacks need a second reviewer."
VACATION = ("Employees receive 25 days of paid vacation per year. Requests go to your "
            "manager two weeks ahead.")
KITCHEN = "The office kitchen is cleaned every Friday. Parking is free for cyclists."


def scrolls_sideways(page: Page) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth > document.documentElement.clientWidth"))


def test_a_conversation_with_a_long_title_fits_a_phone_and_is_renamed_then_deleted(
    clean_redis: None, asgi_url: str, alice: User, browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    conversation = conversation_start(user=alice, first_message=LONG_WORD)
    ChatMessage.objects.create(conversation=conversation, role=Author.USER, content=LONG_WORD)
    kept = conversation_start(user=alice, first_message="Deploy days")
    context = context_for(browser, asgi_url, alice, viewport=PHONE)
    page = context.new_page()
    asked: list[str] = []

    def confirm(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)

    page.goto(f"http://{asgi_url}/chat/{conversation.pk}/")
    expect(page.get_by_role("heading", name=conversation.title)).to_be_visible()
    assert not scrolls_sideways(page)
    screenshot(page, request, "-phone")

    page.get_by_text("Rename").click()
    page.get_by_label("New title").fill("  CI   pipeline  failures ")
    assert not scrolls_sideways(page)
    screenshot(page, request, "-renaming")
    page.get_by_role("button", name="Save title").click()
    expect(page.get_by_role("heading", name="CI pipeline failures")).to_be_visible()
    expect(page.get_by_role("navigation", name="Conversations")).to_contain_text(
        "CI pipeline failures")
    conversation.refresh_from_db()
    assert conversation.title == "CI pipeline failures"
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, request, "-renamed")

    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"http://{asgi_url}/chat/")
    assert asked == ["Delete “CI pipeline failures” and all its messages? "
                     "This cannot be undone."]
    expect(page.get_by_text("Deleted “CI pipeline failures”.")).to_be_visible()
    expect(page.get_by_role("navigation", name="Conversations")).not_to_contain_text(
        "CI pipeline failures")
    assert list(Conversation.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not ChatMessage.objects.exists()
    screenshot(page, request)
    context.close()


def test_a_page_past_the_end_or_not_a_number_says_which_page_is_shown(
    clean_redis: None, asgi_url: str, alice: User, browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    for n in range(DOCUMENTS_PER_PAGE + 1):
        document_create(workspace=alice.personal_workspace, title=f"Note {n}",
                        content="Text.", author=alice)
    context = context_for(browser, asgi_url, alice)
    page = context.new_page()
    notice = page.locator("#document-list .notice")

    # A title with no place to break wraps instead of widening the list or its page.
    long = document_create(workspace=alice.personal_workspace, title="x" * 300,
                           content="Text.", author=alice)
    for path in ("/documents/", f"/documents/{long.pk}/"):
        page.goto(f"http://{asgi_url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth"
                             " <= document.documentElement.clientWidth"), path
    long.delete()

    page.goto(f"http://{asgi_url}/documents/?page=abc")
    expect(notice).to_have_text("There is no page “abc”, so this is page 1 of 2.")
    expect(page.get_by_role("link", name="Note 20")).to_be_visible()
    screenshot(page, request, "-abc")

    page.goto(f"http://{asgi_url}/documents/?page=999")
    expect(notice).to_have_text("There is no page “999”, so this is page 2 of 2.")
    expect(page.get_by_role("link", name="Note 0")).to_be_visible()
    screenshot(page, request)

    # Below 1 is page 1, the nearest; what is echoed is printable.
    page.goto(f"http://{asgi_url}/documents/?page=-1")
    expect(notice).to_have_text("There is no page “-1”, so this is page 1 of 2.")
    page.goto(f"http://{asgi_url}/documents/?page=%00%1b7x")
    expect(notice).to_have_text("There is no page “7x”, so this is page 1 of 2.")

    page.goto(f"http://{asgi_url}/documents/?page=999")
    page.get_by_role("link", name="Previous").click()
    expect(page).to_have_url(f"http://{asgi_url}/documents/?page=1")
    expect(page.get_by_role("link", name="Note 20")).to_be_visible()
    expect(notice).to_have_count(0)
    context.close()


def test_the_usage_page_names_a_workspace_as_every_other_page_does(
    clean_redis: None, asgi_url: str, alice: User, shared_workspace: Workspace,
    browser: Browser, request: pytest.FixtureRequest,
) -> None:
    shared_workspace.name = "Platform team"
    shared_workspace.save()
    for workspace, cost in ((alice.personal_workspace, "0.02"), (shared_workspace, "0.01")):
        ledger_row(user=alice, workspace_id=workspace.pk, cost=cost)
    context = context_for(browser, asgi_url, alice)
    page = context.new_page()

    page.goto(f"http://{asgi_url}/usage/")

    names = page.locator("#usage-top-workspaces tbody tr td:first-child")
    expect(names).to_have_text(["alice's workspace", "Platform team"])
    # The header's switcher names them so on every page.
    switcher = page.locator("#workspace-choice option").all_inner_texts()
    assert sorted(switcher) == sorted(names.all_inner_texts())
    screenshot(page, request)
    context.close()


def test_search_shows_scores_and_says_when_nothing_matches_well(
    clean_redis: None, asgi_url: str, alice: User, browser: Browser,
    request: pytest.FixtureRequest,
) -> None:
    # The real local embedding model: the threshold of a good match was measured on it.
    for title, text in (("Deploys", DEPLOYS), ("Vacation", VACATION), ("Kitchen", KITCHEN)):
        indexed(alice.personal_workspace, alice, title, text)
    context = context_for(browser, asgi_url, alice)
    page = context.new_page()
    results = page.locator(".results li")

    page.goto(f"http://{asgi_url}/search/?q=xylophone+quantum+giraffe")
    expect(page.get_by_role("heading", name="3 passages for “xylophone quantum giraffe”")
           ).to_be_visible()
    expect(page.locator("#no-good-match")).to_contain_text(
        "Nothing matches “xylophone quantum giraffe” well")
    # None shares a word with the query, and each is far from its meaning.
    far = re.compile(r"^\s*Similarity -?0\.[01]\d\s*$")
    expect(results.locator(".scores")).to_have_text([far] * 3)
    screenshot(page, request, "-nonsense")
    # Matched by meaning alone, no word was looked for: the notice claims nothing of words.
    page.get_by_label("Meaning").check()
    expect(page).to_have_url(re.compile(r"mode=vector"))
    expect(page.locator("#no-good-match")).to_contain_text(
        "these are only the nearest passages, and none comes close to its meaning")

    page.goto(f"http://{asgi_url}/search/?q=who+approves+my+holidays")
    expect(page.locator("#no-good-match")).to_have_count(0)
    best = results.first
    expect(best.get_by_role("link")).to_have_text("Vacation")
    # "holidays" and "approves" occur nowhere: the passage matches by meaning alone.
    expect(best.locator(".scores")).to_have_text(re.compile(r"^\s*Similarity 0\.\d\d\s*$"))
    screenshot(page, request)

    page.get_by_label("Search for").fill("rollbacks")
    page.get_by_label("Exact words").check()
    expect(results).to_have_count(1)
    expect(results.first.locator(".scores")).to_have_text(
        re.compile(r"^\s*Keyword score \d+\.\d\d\s*$"))
    expect(page.locator("#no-good-match")).to_have_count(0)
    screenshot(page, request, "-words")
    context.close()
