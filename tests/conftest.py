"""Fixtures shared by every test: users, tokens, API clients and a real Celery worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from aistack.accounts.models import Role, Workspace
from aistack.accounts.services import api_token_create, membership_set, user_create
from aistack.ai.backends import scripted
from aistack.celery import app as celery_app
from aistack.redis import connections

# The `browser` fixture, for the tests that drive Chromium.
pytest_plugins = ["tests.browser"]


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


def model_entry(spec: str, **options: Any) -> dict[str, Any]:
    """Return a settings entry for ``provider:model``, the way settings build them."""
    provider, _, model = spec.partition(":")
    kind = "EmbeddingModel" if options.pop("embedding", False) else "ChatModel"
    return {"BACKEND": f"aistack.ai.backends.{provider}.{kind}", "MODEL": model,
            "OPTIONS": options}


@pytest.fixture
def use_models(settings: Any) -> Callable[..., None]:
    """Configure the chat chain (default first, then fallbacks) and the embedding model."""

    def use(*chat: str | dict[str, Any], embedding: str | dict[str, Any] | None = None) -> None:
        entries = [model_entry(c) if isinstance(c, str) else c for c in chat]
        if entries:
            settings.AI_CHAT_MODELS = {
                "default": entries[0],
                **{f"fallback-{n}": entry for n, entry in enumerate(entries[1:], start=1)},
            }
            settings.AI_CHAT_FALLBACKS = [f"fallback-{n}" for n in range(1, len(entries))]
        if embedding is not None:
            settings.AI_EMBEDDING_MODELS = {
                "default": model_entry(embedding, embedding=True)
                if isinstance(embedding, str) else embedding
            }

    return use


@pytest.fixture(autouse=True)
def fresh_ai_state() -> Iterator[None]:
    """Start each test with no scripted steps, no recorded calls and closed circuits."""
    # A test that made Redis unreachable must not leave the process skipping it.
    connections._outage_until = 0.0
    scripted.reset()
    cache.clear()
    yield
    scripted.reset()


@pytest.fixture
def asgi_url(transactional_db: None) -> Iterator[str]:
    """A real ASGI server (uvicorn) on a free port in a thread; yields ``host:port``."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config("aistack.asgi:application", host="127.0.0.1",
                                           port=port, lifespan="off", log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def scripted_chat(use_models: Callable[..., None]) -> Callable[..., None]:
    """Make ``scripted:echo`` the chat model; call the result to give it a latency."""

    def use(*, latency: float = 0.0) -> None:
        use_models(model_entry("scripted:echo", LATENCY_SECONDS=latency))

    use()
    return use
