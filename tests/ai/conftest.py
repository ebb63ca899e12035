"""Fixtures for the AI layer: model settings, the scripted backend, fake vendor servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from aistack.accounts.services import user_create
from aistack.ai import _other_embedding_models, chat_models, embedding_models, setup
from tests.ai.vendors import VendorServer

TEST_API_KEY = "sk-test-not-a-real-key-0123456789"


@pytest.fixture
def vendor() -> Iterator[VendorServer]:
    server = VendorServer()
    yield server
    server.close()


@pytest.fixture
def admin(db: None) -> User:
    return user_create(username="root", password="correct horse battery staple", is_staff=True)


@pytest.fixture
def browser_of(admin: User) -> Client:
    """A client signed in as a member of staff (the Models page)."""
    client = Client()
    client.force_login(admin)
    return client


def _forget_models() -> None:
    setup.follower.__init__()  # type: ignore[misc]
    chat_models.reset()
    embedding_models.reset()
    _other_embedding_models.clear()


@pytest.fixture
def page_follower(clean_redis: None) -> Iterator[None]:
    """Start with no published Models page setup and no models built from one."""
    _forget_models()
    yield
    _forget_models()


def follow() -> None:
    """Let this process see a change of the Models page now rather than within seconds."""
    setup.follower.checked_at = -setup.REFRESH_SECONDS

