"""The document page in a real browser: the summary arrives live, with no reload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from playwright.sync_api import BrowserContext, Page, expect

from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update
from aistack.jobs.kinds import JobStatus
from harness import wait_for
from tests.browser import screenshot

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = "Deploys happen on Tuesdays. Rollbacks need a second reviewer."


def open_page(context: BrowserContext, asgi_url: str, document: Document) -> Page:
    page = context.new_page()
    page.goto(f"http://{asgi_url}/documents/{document.pk}/")
    # Gone if the page reloads: proves the summary came in without one.
    page.evaluate("window.sameDocument = true")
    return page


def test_the_placeholder_is_replaced_by_the_summary_without_a_reload(
    celery_worker: Any, asgi_url: str, alice: User, logged_in: BrowserContext,
    scripted_chat: Callable[..., None], request: pytest.FixtureRequest,
) -> None:
    scripted_chat(latency=1.5)
    scripted.script("echo", Reply(text="Deploys are on Tuesdays, with reviewed rollbacks."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)

    page = open_page(logged_in, asgi_url, document)

    expect(page.get_by_text("Generating summary…")).to_be_visible()
    screenshot(page, request, "-before")
    expect(page.locator("#summary-text")).to_have_text(
        # The worker indexes the document first: loading MiniLM can take 20 s on a busy machine.
        "Deploys are on Tuesdays, with reviewed rollbacks.", timeout=60_000)
    expect(page.get_by_text("Generating summary…")).to_be_hidden()
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, request)


def test_a_page_opened_after_completion_shows_the_final_state(
    celery_worker: Any, asgi_url: str, alice: User, logged_in: BrowserContext,
    scripted_chat: Callable[..., None], request: pytest.FixtureRequest,
) -> None:
    scripted.script("echo", Reply(text="Already summarized."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    wait_for(lambda: Document.objects.get(pk=document.pk).summary_status == JobStatus.COMPLETE,
             message="summary")

    page = open_page(logged_in, asgi_url, document)

    expect(page.locator("#summary-text")).to_have_text("Already summarized.")
    expect(page.get_by_text("Generating summary…")).to_be_hidden()
    expect(page.locator("#summary-refreshing")).to_be_hidden()
    screenshot(page, request)


def test_an_edit_marks_the_summary_refreshing_until_the_new_one_lands(
    celery_worker: Any, asgi_url: str, alice: User, logged_in: BrowserContext,
    scripted_chat: Callable[..., None], request: pytest.FixtureRequest,
) -> None:
    scripted_chat(latency=1.5)
    scripted.script("echo", Reply(text="The first summary."), Reply(text="The second summary."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    wait_for(lambda: Document.objects.get(pk=document.pk).summary_status == JobStatus.COMPLETE,
             message="summary")
    page = open_page(logged_in, asgi_url, document)
    expect(page.locator("#summary-text")).to_have_text("The first summary.")

    document.refresh_from_db()
    document_update(document=document, content=CONTENT + " Hotfixes skip the queue.")

    expect(page.locator("#summary-refreshing")).to_be_visible(timeout=10_000)
    expect(page.locator("#summary-text")).to_have_text("The first summary.")
    screenshot(page, request, "-refreshing")
    expect(page.locator("#summary-text")).to_have_text("The second summary.", timeout=60_000)
    expect(page.locator("#summary-refreshing")).to_be_hidden()
    assert page.evaluate("window.sameDocument") is True


def test_the_page_needs_a_login_and_membership(alice: User, bob: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    client = Client()

    assert client.get(f"/documents/{document.pk}/").status_code == 302
    client.force_login(bob)
    assert client.get(f"/documents/{document.pk}/").status_code == 404
