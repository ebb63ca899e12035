"""Fixtures for the AI layer: model settings, the scripted backend, fake vendor servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from aistack.ai.backends import scripted
from tests.ai.vendors import VendorServer

TEST_API_KEY = "sk-test-not-a-real-key-0123456789"


def model_entry(spec: str, **options: Any) -> dict[str, Any]:
    """Return a settings entry for ``provider:model``, the way settings build them."""
    provider, _, model = spec.partition(":")
    kind = "EmbeddingModel" if options.pop("embedding", False) else "ChatModel"
    return {"BACKEND": f"aistack.ai.backends.{provider}.{kind}", "MODEL": model,
            "OPTIONS": options}


@pytest.fixture(autouse=True)
def fresh_ai_state() -> Iterator[None]:
    """Start each test with no scripted steps, no recorded calls and closed circuits."""
    scripted.reset()
    cache.clear()
    yield
    scripted.reset()


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


@pytest.fixture
def vendor() -> Iterator[VendorServer]:
    server = VendorServer()
    yield server
    server.close()
