"""Browser contexts of the web app's users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, BrowserContext

from tests.browser import context_for


@pytest.fixture
def logged_in(browser: Browser, asgi_url: str, alice: User) -> Iterator[BrowserContext]:
    """A browser context with alice's session cookie."""
    context = context_for(browser, asgi_url, alice)
    yield context
    context.close()
