"""Per-user rate limits on the AI endpoints: 429 with Retry-After, counted in Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.documents.services import document_create
from tests.conftest import ApiClient


@pytest.fixture
def ai_models(use_models: Callable[..., None], settings: Any) -> None:
    use_models("scripted:echo", embedding="scripted:hash")
    settings.AI_RATE_LIMIT = "3/minute"


def test_requests_past_the_limit_get_429_with_retry_after(
    alice_api: ApiClient, bob_api: ApiClient, ai_models: None,
) -> None:
    answered = [alice_api.post("/api/v1/chat", {"prompt": "Hello"}).status_code
                for _ in range(3)]

    refused = alice_api.post("/api/v1/chat", {"prompt": "Hello"})

    assert answered == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "3 per 1 minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Limits are per user: bob still has all of his.
    assert bob_api.post("/api/v1/chat", {"prompt": "Hello"}).status_code == 200


def test_search_ask_chat_and_summary_requests_share_one_limit(
    alice: User, alice_api: ApiClient, ai_models: None,
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content="Deploys happen on Tuesdays.", author=alice)

    statuses = [
        alice_api.get("/api/v1/search", {"q": "deploys", "mode": "hybrid"}).status_code,
        alice_api.post("/api/v1/ask", {"question": "When are deploys?"}).status_code,
        alice_api.post(f"/api/v1/documents/{document.pk}/summary").status_code,
        alice_api.post("/api/v1/chat", {"prompt": "Hello"}).status_code,
    ]

    assert statuses == [200, 200, 202, 429]
    # Reading documents and searching by text ask no model: never limited.
    assert alice_api.get(f"/api/v1/documents/{document.pk}").status_code == 200
    assert alice_api.get("/api/v1/search", {"q": "deploys", "mode": "text"}).status_code == 200


def test_the_limit_can_be_turned_off(alice_api: ApiClient, ai_models: None,
                                     settings: Any) -> None:
    settings.AI_RATE_LIMIT = ""

    statuses = {alice_api.post("/api/v1/chat", {"prompt": "Hello"}).status_code
                for _ in range(5)}

    assert statuses == {200}
