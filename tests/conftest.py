"""Fixtures shared by every test: users, tokens, API clients and a real Celery worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from aistack.accounts.models import Role, Workspace
from aistack.accounts.services import api_token_create, membership_set, user_create
from aistack.celery import app as celery_app


class ApiClient:
    """A test client that sends a bearer token and JSON."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        call = getattr(self.client, method)
        if body is not None and method in {"post", "patch", "put"}:
            extra.setdefault("content_type", "application/json")
            return call(path, body, headers=self.headers, **extra)
        return call(path, body or {}, headers=self.headers, **extra)

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("get", path, params)

    def post(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.request("post", path, body, **extra)

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("patch", path, body)

    def delete(self, path: str) -> Any:
        return self.request("delete", path)


@pytest.fixture
def alice(db: None) -> User:
    return user_create(username="alice", password="correct horse battery staple")


@pytest.fixture
def bob(db: None) -> User:
    return user_create(username="bob", password="correct horse battery staple")


def client_for(user: User) -> ApiClient:
    _, raw = api_token_create(user=user)
    return ApiClient(raw)


@pytest.fixture
def alice_api(alice: User) -> ApiClient:
    return client_for(alice)


@pytest.fixture
def bob_api(bob: User) -> ApiClient:
    return client_for(bob)


@pytest.fixture
def anonymous_api() -> ApiClient:
    return ApiClient(None)


@pytest.fixture
def shared_workspace(alice: User, bob: User) -> Workspace:
    """A workspace alice owns and bob can only view."""
    from aistack.accounts.services import workspace_create

    workspace = workspace_create(owner=alice, name="Team")
    membership_set(workspace=workspace, user=bob, role=Role.VIEWER)
    return workspace


@pytest.fixture
def clean_redis() -> None:
    """Start from an empty Redis: no queued messages or cache from earlier tests."""
    cache.clear()
    with celery_app.connection_for_write() as connection:
        connection.default_channel.client.flushdb()


@pytest.fixture
def celery_worker(transactional_db: None, clean_redis: None) -> Iterator[Any]:
    """A real Celery worker consuming the real Redis broker, in a thread of this process."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      shutdown_timeout=10) as worker:
        yield worker
