"""In Chromium: Markdown rendered safely, chat over the documents offline, Enter to ask.

The built-in models throughout (MiniLM int8 and the extractive model): the offline
experience a team meets first.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import BrowserContext, expect

from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.chat.models import ChatMessage
from aistack.documents.summaries import summary_read
from tests.browser import screenshot
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

GUIDE = """# Onboarding guide

Welcome to the team. In your **first week**, set up your laptop with the standard image
and read the [engineering handbook](https://handbook.example.com/start).

## On-call

- Every engineer joins the on-call rotation after their first month.
- Before the first shift, read the incident response guide and shadow one full on-call week.

## Expenses

Expense reports are filed monthly through the finance portal. Receipts older than 90 days
are not reimbursed.

<img src="x" onerror="window.attacked = 'img'"> <script>window.attacked = 'script'</script>
[a trap](javascript:window.attacked='link') ![pixel](https://tracker.example.com/p.gif)
"""


@pytest.fixture
def offline(use_models: Callable[..., None]) -> None:
    use_models("local:extractive", embedding="local:all-MiniLM-L6-v2-int8")
    scripted.reset()


def test_a_markdown_document_and_its_summary_are_rendered_and_nothing_in_them_runs(
    offline: None, clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    request: pytest.FixtureRequest,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Onboarding guide", GUIDE)
    summary_read(document=document)
    page = logged_in.new_page()

    page.goto(f"http://{asgi_url}/documents/{document.pk}/")
    page.get_by_text("Full text").click()

    content = page.locator("article.content")
    expect(content.get_by_role("heading", name="On-call")).to_be_visible()
    expect(content.locator("strong")).to_have_text("first week")
    expect(content.locator("li")).to_have_count(2)
    link = content.get_by_role("link", name="engineering handbook")
    expect(link).to_have_attribute("href", "https://handbook.example.com/start")
    expect(link).to_have_attribute("rel", "noopener nofollow")
    # Raw HTML is shown as text; the image is a link, never loaded; the script link is text.
    expect(content).to_contain_text('<script>window.attacked')
    assert content.locator("img, script").count() == 0
    expect(content.get_by_role("link", name="pixel")).to_have_attribute(
        "href", "https://tracker.example.com/p.gif")
    assert content.get_by_role("link", name="a trap").count() == 0
    content.get_by_text("a trap").click()
    assert page.evaluate("window.attacked") is None

    summary = page.locator("#summary-text")
    expect(summary).to_contain_text("In your first week")
    expect(summary).to_contain_text("finance portal")
    assert not re.search(r"[#*]|\[\d\].*\[\d\]", summary.text_content() or "")
    expect(summary.locator("p")).to_have_count(1)
    screenshot(page, request)


def test_chat_answers_a_follow_up_offline_from_the_documents_and_keeps_its_sources(
    offline: None, clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    request: pytest.FixtureRequest,
) -> None:
    guide = indexed(alice.personal_workspace, alice, "Onboarding guide", GUIDE)
    indexed(alice.personal_workspace, alice, "Vacation policy",
            "Employees receive 25 days of paid vacation per year.")
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/chat/")
    expect(page.get_by_label(re.compile("Answer from the documents"))).to_be_checked()

    page.get_by_label("Message").fill("When does an engineer join the on-call rotation?")
    page.get_by_label("Message").press("Enter")
    # The follow-up is sent while the first reply is still coming: it waits its turn,
    # then goes out in the same conversation.
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_label("Message").fill("How should I prepare for it?")
    page.get_by_label("Message").press("Enter")
    first = page.locator(".turn.assistant").nth(0)
    expect(first.locator(".text")).to_contain_text("after their first month", timeout=30_000)
    second = page.locator(".turn.assistant").nth(1)
    expect(second.locator(".text")).to_contain_text("shadow one full on-call week",
                                                    timeout=30_000)
    cite = second.locator(".text a.cite").first
    expect(cite).to_be_visible()
    source = second.locator(".citations li").first
    expect(source.get_by_role("link")).to_have_text("Onboarding guide")
    expect(source.get_by_role("link")).to_have_attribute(
        "href", re.compile(rf"^/documents/{guide.pk}/#chunk-\d+$"))
    expect(second.locator(".model")).to_contain_text("built-in extractive model")
    screenshot(page, request, "-streamed")

    page.reload()
    second = page.locator(".turn.assistant").nth(1)
    expect(second.locator(".citations li").first.get_by_role("link")).to_have_text(
        "Onboarding guide")
    second.locator(".text a.cite").first.click()
    assert page.evaluate("location.hash").startswith("#turn-")
    assert ChatMessage.objects.filter(citations__0__document_id=guide.pk).count() == 2
    screenshot(page, request)


def test_enter_asks_and_shift_enter_adds_a_line_and_the_answer_renders_markdown(
    clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    use_models: Callable[..., None], scripted_chat: Callable[..., None],
    request: pytest.FixtureRequest,
) -> None:
    use_models(embedding="scripted:hash")
    scripted.script("echo", Reply(text="Deploys happen on **Tuesdays** [1].\n\n- one\n- two",
                                  chunk_delay=0.05))
    indexed(alice.personal_workspace, alice, "Deploys", "Deploys happen on Tuesdays.")
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/ask/")

    question = page.get_by_label("Your question")
    question.fill("When do")
    question.press("Shift+Enter")
    question.type("deploys happen?")
    assert question.input_value() == "When do\ndeploys happen?"
    expect(page.locator("#answer")).to_be_hidden()
    question.press("Enter")

    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=15_000)
    answer = page.locator("#answer-text")
    expect(answer.locator("strong")).to_have_text("Tuesdays")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer.locator("a.cite")).to_have_attribute("href", "#citation-1")
    assert scripted.calls()[-1].messages[-1] == "When do\ndeploys happen?"
    screenshot(page, request)
