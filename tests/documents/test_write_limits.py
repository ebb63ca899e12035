"""A per-user limit on document writes: 429 with Retry-After, on the API and the pages."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from aistack.documents.models import Document
from tests.conftest import ApiClient


def test_writes_past_the_limit_get_429_and_reads_do_not_count(
    alice_api: ApiClient, bob_api: ApiClient, settings: Any, clean_redis: None,
) -> None:
    settings.WRITE_RATE_LIMIT = "4/minute"
    created = alice_api.post("/api/v1/documents", {"title": "One", "content": "Text."})
    document_id = created.json()["id"]
    statuses = [
        created.status_code,
        alice_api.patch(f"/api/v1/documents/{document_id}", {"title": "Two"}).status_code,
        alice_api.post("/api/v1/documents", {"title": "Three", "content": "Text."}).status_code,
        alice_api.get(f"/api/v1/documents/{document_id}").status_code,
        alice_api.delete(f"/api/v1/documents/{document_id}").status_code,
    ]
    refused = alice_api.post("/api/v1/documents", {"title": "Five", "content": "Text."})

    assert statuses == [201, 200, 201, 200, 204]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "4 per 1 minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Per user: bob has all of his.
    assert bob_api.post("/api/v1/documents", {"title": "B", "content": "Text."}).status_code == 201


def test_the_page_form_obeys_the_same_limit(alice: User, client: Client, settings: Any,
                                            clean_redis: None) -> None:
    settings.WRITE_RATE_LIMIT = "2/minute"
    client.force_login(alice)
    statuses = [client.post("/documents/new/", {"title": f"Note {n}", "content": "Text."})
                .status_code for n in range(3)]

    assert statuses == [302, 302, 429]
    assert Document.objects.filter(author=alice).count() == 2
