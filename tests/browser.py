"""A real Chromium, driven by Playwright, for tests against the `asgi_url` fixture's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop in this thread, which Django would
    # otherwise take for an async context and refuse the test's own database queries.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"],
        )
        yield browser
        browser.close()
        # Django keeps the test's connections apart from pytest-django's in that loop's
        # context: close them here, or the test database cannot be dropped.
        connections.close_all()


def context_for(browser: Browser, asgi_url: str, user: User, **options: Any) -> BrowserContext:
    """Return a browser context signed in as ``user`` (by session cookie)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(**options)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                          "url": f"http://{asgi_url}"}])
    return context


def screenshot(page: Page, request: pytest.FixtureRequest, suffix: str = "") -> None:
    """Save the whole page under artifacts/screenshots, named after the test."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}{suffix}.png", full_page=True)
