"""The documents API: shapes, validation, pagination, permissions and errors."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from aistack.accounts.models import Workspace
from aistack.documents.models import Document
from aistack.jobs.models import Job
from tests.conftest import ApiClient

DOCUMENT_FIELDS = {"id", "workspace", "title", "content", "embedding_status",
                   "summary_status", "created_at", "updated_at"}


def create(api: ApiClient, **fields: Any) -> Any:
    body = {"title": "Runbook", "content": "Restart the service, then check the logs."} | fields
    return api.post("/api/v1/documents", body)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert "Traceback" not in response.content.decode()
    return error


def test_create_returns_201_with_pending_statuses_and_queues_a_job(
    alice: User, alice_api: ApiClient
) -> None:
    response = create(alice_api)

    assert response.status_code == 201
    body = response.json()
    assert body.keys() >= DOCUMENT_FIELDS
    assert body["workspace"] == alice.personal_workspace.pk
    assert body["embedding_status"] == "pending"
    assert body["summary_status"] == "pending"
    document = Document.objects.get(pk=body["id"])
    assert document.author == alice
    assert len(document.content_hash) == 64
    assert Job.objects.get(kind="documents.index", object_id=document.pk).status == "pending"


def test_read_update_delete_round_trip(alice_api: ApiClient) -> None:
    document_id = create(alice_api).json()["id"]
    url = f"/api/v1/documents/{document_id}"

    assert alice_api.get(url).json()["title"] == "Runbook"
    patched = alice_api.patch(url, {"content": "New steps."})
    assert patched.status_code == 200
    assert patched.json()["content"] == "New steps."
    assert patched.json()["title"] == "Runbook"
    assert alice_api.delete(url).status_code == 204
    assert_error(alice_api.get(url), 404, "not_found")
    assert not Job.objects.filter(object_id=document_id, kind="documents.index").exists()


def test_only_real_changes_reprocess(alice_api: ApiClient) -> None:
    document_id = create(alice_api).json()["id"]
    job = Job.objects.get(kind="documents.index", object_id=document_id)

    alice_api.patch(f"/api/v1/documents/{document_id}", {"title": "Runbook"})
    job.refresh_from_db()
    assert job.generation == 1
    # The title is part of every chunk's indexed text, so renaming reprocesses.
    alice_api.patch(f"/api/v1/documents/{document_id}", {"title": "Renamed"})
    job.refresh_from_db()
    assert job.generation == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "", "content": "x"}, "title"),
        ({"title": "   ", "content": "x"}, "title"),
        ({"title": "t", "content": ""}, "content"),
        ({"title": "t" * 301, "content": "x"}, "title"),
        ({"title": "t", "content": "bad\x00byte"}, "content"),
        ({"title": "t"}, "content"),
        ({"content": "x"}, "title"),
        ({"title": ["not", "a", "string"], "content": "x"}, "title"),
        ({"title": "t", "content": "x", "workspace": "abc"}, "workspace"),
    ],
)
def test_invalid_documents_get_422_naming_the_field(
    alice_api: ApiClient, body: dict[str, Any], field: str
) -> None:
    error = assert_error(alice_api.post("/api/v1/documents", body), 422, "invalid")
    assert field in error["message"]
    assert not Document.objects.exists()


def test_content_over_the_limit_is_rejected(alice_api: ApiClient) -> None:
    too_long = "a" * (settings.DOCUMENT_MAX_CHARS + 1)
    response = create(alice_api, content=too_long)
    assert response.status_code in {413, 422}
    assert response.json()["error"]["code"] in {"payload_too_large", "invalid"}


def test_body_larger_than_the_upload_limit_gets_413(alice_api: ApiClient) -> None:
    huge = "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)
    assert_error(create(alice_api, content=huge), 413, "payload_too_large")


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"null", b"\xff\xfe", b""])
def test_malformed_bodies_are_4xx_never_500(alice_api: ApiClient, raw: bytes) -> None:
    response = alice_api.client.post("/api/v1/documents", raw, content_type="application/json",
                                      headers=alice_api.headers)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_list_is_paginated_newest_first_with_a_next_link(alice_api: ApiClient) -> None:
    for n in range(5):
        create(alice_api, title=f"Doc {n}")

    first = alice_api.get("/api/v1/documents", {"limit": 2}).json()
    assert first["count"] == 5
    assert [item["title"] for item in first["items"]] == ["Doc 4", "Doc 3"]
    second = alice_api.get(first["next"].removeprefix("http://testserver")).json()
    assert [item["title"] for item in second["items"]] == ["Doc 2", "Doc 1"]
    last = alice_api.get("/api/v1/documents", {"limit": 2, "offset": 4}).json()
    assert last["next"] is None
    assert [item["title"] for item in last["items"]] == ["Doc 0"]
    filtered = alice_api.get("/api/v1/documents", {"title": "doc 3"}).json()
    assert filtered["count"] == 1


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1000}, {"offset": -1},
                                    {"limit": "many"}])
def test_bad_page_parameters_get_422(alice_api: ApiClient, params: dict[str, Any]) -> None:
    assert_error(alice_api.get("/api/v1/documents", params), 422, "invalid")


def test_other_users_documents_are_invisible(alice_api: ApiClient, bob_api: ApiClient) -> None:
    document_id = create(alice_api).json()["id"]
    url = f"/api/v1/documents/{document_id}"

    assert_error(bob_api.get(url), 404, "not_found")
    assert_error(bob_api.patch(url, {"title": "mine now"}), 404, "not_found")
    assert_error(bob_api.delete(url), 404, "not_found")
    assert bob_api.get("/api/v1/documents").json()["count"] == 0
    assert Document.objects.get(pk=document_id).title == "Runbook"


def test_creating_in_a_foreign_workspace_is_404(alice: User, bob_api: ApiClient) -> None:
    foreign = alice.personal_workspace.pk
    assert_error(create(bob_api, workspace=foreign), 404, "not_found")
    assert_error(create(bob_api, workspace=999_999), 404, "not_found")


def test_viewers_read_but_cannot_write(
    alice_api: ApiClient, bob_api: ApiClient, shared_workspace: Workspace
) -> None:
    document_id = create(alice_api, workspace=shared_workspace.pk).json()["id"]
    url = f"/api/v1/documents/{document_id}"

    assert bob_api.get(url).status_code == 200
    assert bob_api.get("/api/v1/documents", {"workspace": shared_workspace.pk}).json()["count"] == 1
    assert_error(bob_api.patch(url, {"title": "x"}), 403, "forbidden")
    assert_error(bob_api.delete(url), 403, "forbidden")
    assert_error(create(bob_api, workspace=shared_workspace.pk), 403, "forbidden")


def test_missing_token_and_unknown_ids_and_paths(anonymous_api: ApiClient,
                                                 alice_api: ApiClient) -> None:
    assert_error(anonymous_api.get("/api/v1/documents"), 401, "unauthenticated")
    assert_error(anonymous_api.post("/api/v1/documents", {"title": "t", "content": "c"}),
                 401, "unauthenticated")
    assert_error(alice_api.get("/api/v1/documents/999999"), 404, "not_found")
    assert_error(alice_api.get("/api/v1/documents/not-a-number"), 404, "not_found")
    assert_error(alice_api.get("/api/v1/no-such-thing"), 404, "not_found")


def test_session_login_works_and_needs_csrf_for_writes(alice: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    assert browser.get("/api/v1/documents").status_code == 200
    response = browser.post("/api/v1/documents", {"title": "t", "content": "c"},
                            content_type="application/json")
    assert response.status_code in {401, 403}


def test_openapi_schema_describes_the_documents_api(db: None) -> None:
    schema = Client().get("/api/v1/openapi.json").json()

    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/documents", "/api/v1/documents/{document_id}"} <= schema["paths"].keys()


def test_health_endpoints(db: None) -> None:
    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["redis"] == "ok"
