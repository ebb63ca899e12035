"""Every answer of the API is JSON, errors included: the error shape, never a stock page."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client

from aistack.documents.services import document_create
from tests.conftest import ApiClient


def test_a_method_the_endpoint_does_not_take_is_a_json_405(alice: User,
                                                           alice_api: ApiClient) -> None:
    document = document_create(workspace=alice.personal_workspace, title="T", content="Text.",
                               author=alice)
    for method, path in (("put", f"/api/v1/documents/{document.pk}"),
                         ("delete", "/api/v1/documents")):
        answer = alice_api.request(method, path)
        assert answer.status_code == 405
        assert answer["Content-Type"].startswith("application/json")
        assert answer.json()["error"]["code"] == "method_not_allowed"
        assert answer["Allow"]


def test_a_form_without_its_csrf_token_is_a_403_page_or_json_never_the_stock_page(
    alice: User,
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.post("/documents/new/", {"title": "T", "content": "Text."},
                       headers={"Accept": "text/html"})
    script = client.post("/documents/new/", {"title": "T", "content": "Text."},
                         headers={"Accept": "application/json"})
    api = client.post("/api/v1/documents", {"title": "T", "content": "Text."},
                      content_type="application/json")

    assert page.status_code == 403
    assert b"Reload the page and try again" in page.content
    assert b"CSRF verification failed" not in page.content
    assert script.status_code == api.status_code == 403
    assert script.json()["error"]["code"] == api.json()["error"]["code"] == "forbidden"


def test_a_null_where_text_is_expected_is_a_422(alice: User, alice_api: ApiClient) -> None:
    document = document_create(workspace=alice.personal_workspace, title="T", content="Text.",
                               author=alice)
    answer = alice_api.patch(f"/api/v1/documents/{document.pk}", {"content": None})
    assert answer.status_code == 422
    document.refresh_from_db()
    assert document.content == "Text."
