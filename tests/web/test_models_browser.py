"""In Chromium: an administrator connects a model on the Models page and chat uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from aistack.accounts.services import user_create
from aistack.ai import chat_models, embedding_models, setup
from aistack.ai.setup import model_setup_save
from aistack.retrieval.reindex import embedding_switch, reindex_run
from tests.ai.vendors import (
    VendorServer,
    openai_chat,
    openai_error,
    openai_stream,
    words_embedded,
)
from tests.browser import context_for, screenshot
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-browser-key-0123456789"


@pytest.fixture
def vendor() -> Iterator[VendorServer]:
    server = VendorServer()
    setup.follower.__init__()  # type: ignore[misc]
    chat_models.reset()
    embedding_models.reset()
    yield server
    server.close()
    setup.follower.__init__()  # type: ignore[misc]
    chat_models.reset()
    embedding_models.reset()


def test_an_administrator_tests_and_saves_a_model_and_chat_streams_from_it(
    clean_redis: None, asgi_url: str, browser: Browser, vendor: VendorServer,
    request: pytest.FixtureRequest,
) -> None:
    admin = user_create(username="root", password="correct horse battery staple",
                        is_staff=True)
    context = context_for(browser, asgi_url, admin)
    page = context.new_page()
    page.goto(f"http://{asgi_url}/documents/")
    page.get_by_role("link", name="Models").click()
    expect(page.locator("#chat-in-use")).to_have_text("local:extractive")

    page.get_by_label("Provider").select_option("compatible")
    page.get_by_label("Address").fill(vendor.url)
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("Chat model").fill("team-model")
    vendor.push(openai_error(401, message="Incorrect API key provided",
                             kind="invalid_request_error"))
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#test-outcome")).to_contain_text(
        "openai:team-model did not answer: the API key was refused (HTTP 401).")
    expect(page.get_by_label("API key")).to_have_value("")
    screenshot(page, request, "-refused")

    page.get_by_label("API key").fill(KEY)
    vendor.push(openai_chat("Hello, I am the team model."))
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#test-outcome")).to_have_text(
        "openai:team-model answered: Hello, I am the team model.")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Save for everyone").click()
    expect(page.get_by_text(
        "Every process now uses team-model (Any OpenAI-compatible server)")).to_be_visible()
    expect(page.locator("#chat-in-use")).to_have_text("openai:team-model")
    expect(page.locator("#key-saved")).to_be_visible()
    assert KEY not in page.content()
    screenshot(page, request)

    vendor.push(openai_stream(["Deploys ", "are ", "on ", "**Tuesdays**."], chunk_delay=0.05))
    page.goto(f"http://{asgi_url}/chat/")
    page.get_by_label("Answer from the documents").uncheck()
    page.get_by_label("Message").fill("When do we deploy?")
    page.get_by_label("Message").press("Enter")
    reply = page.locator(".turn.assistant")
    expect(reply.locator(".text strong")).to_have_text("Tuesdays")
    expect(reply.locator(".model")).to_have_text("openai:team-model")
    assert vendor.received[-1].body["model"] == "team-model"
    screenshot(page, request, "-chat")

    page.goto(f"http://{asgi_url}/models/")
    page.get_by_role("button", name="Use the environment's models").click()
    expect(page.locator("#chat-in-use")).to_have_text("local:extractive")
    context.close()


def test_an_administrator_switches_the_embedding_model_and_watches_it_happen(
    clean_redis: None, asgi_url: str, browser: Browser, vendor: VendorServer,
    request: pytest.FixtureRequest,
) -> None:
    admin = user_create(username="root", password="correct horse battery staple",
                        is_staff=True)
    for title, text in (("Vacation", "Employees get 25 days of paid vacation."),
                        ("Parking", "Parking permits renew every January.")):
        indexed(admin.personal_workspace, admin, title, text)
    vendor.answer = words_embedded(width=8)
    model_setup_save(provider="compatible", base_url=f"{vendor.url}/v1", api_key=KEY,
                     chat_model="team-model", fallbacks="", user=admin)
    context = context_for(browser, asgi_url, admin)
    page = context.new_page()
    page.goto(f"http://{asgi_url}/models/")
    expect(page.locator("#embedding-in-use")).to_have_text("local:all-MiniLM-L6-v2-int8")

    page.get_by_label("Embedding model").fill("no such model")
    page.get_by_role("button", name="Embed with this model").click()
    expect(page.get_by_text("A model name has no spaces")).to_be_visible()

    page.get_by_label("Embedding model").fill("team-embed")
    page.get_by_role("button", name="Embed with this model").click()
    expect(page.get_by_text("Search moves to page:openai:team-embed once every document "
                            "has its vectors")).to_be_visible()
    setup.follower.checked_at = -setup.REFRESH_SECONDS
    # What a worker does when it gets the message (none runs in this test).
    assert embedding_switch().queued == 2
    page.reload()
    expect(page.locator("#reindex-progress")).to_contain_text(
        "Re-embedding for page:openai:team-embed: 0 of 2 passages.")
    expect(page.get_by_label("Embedding model")).to_have_value("team-embed")
    screenshot(page, request, "-building")

    assert reindex_run(progress=lambda done: None)
    page.reload()
    expect(page.locator("#embedding-in-use")).to_have_text("page:openai:team-embed")
    expect(page.locator("#reindex-progress")).to_have_count(0)
    screenshot(page, request)
    context.close()
