"""Uploads: stored at once, parsed and indexed in the job, failures kept readable."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from aistack.accounts.models import Workspace
from aistack.documents.models import Document
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.retrieval.models import Chunk
from tests.conftest import ApiClient
from tests.documents.files import make_bomb, make_docx, make_pdf
from tests.retrieval.helpers import index_now


@pytest.fixture(autouse=True)
def media_in_tmp(tmp_path: Any, settings: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(api: ApiClient, name: str, data: bytes, content_type: str = "application/octet-stream",
           **fields: Any) -> Any:
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return api.client.post("/api/v1/documents/upload", {"file": file, **fields},
                           headers=api.headers)


def processed(response: Any) -> Document:
    assert response.status_code == 201, response.content
    return index_now(Document.objects.get(pk=response.json()["id"]))


@pytest.mark.parametrize(
    ("name", "data", "expected_title", "expected_text"),
    [
        ("notes.txt", b"Plain notes about the launch.", "notes",
         "Plain notes about the launch."),
        ("plan.md", b"# Launch plan\n\nShip on Monday.", "Launch plan", "Ship on Monday."),
        ("page.html", b"<html><head><title>Handbook</title><script>x()</script></head>"
                      b"<body><p>Be kind.</p></body></html>", "Handbook", "Be kind."),
        ("report.pdf", make_pdf(["Revenue grew in every region."], title="Q3 report"),
         "Q3 report", "Revenue grew in every region."),
        ("report.docx", make_docx(), "Results", "Hire two engineers."),
    ],
)
def test_each_supported_type_is_parsed_chunked_and_searchable(
    alice_api: ApiClient, name: str, data: bytes, expected_title: str, expected_text: str
) -> None:
    response = upload(alice_api, name, data)
    assert response.json()["embedding_status"] == "pending"
    assert response.json()["source_name"] == name

    document = processed(response)

    assert document.embedding_status == JobStatus.COMPLETE, document.embedding_error
    assert expected_text in document.content
    assert document.title == expected_title
    assert Chunk.objects.filter(document=document).exists()
    assert len(document.content_hash) == 64


def test_a_given_title_is_kept(alice_api: ApiClient) -> None:
    document = processed(upload(alice_api, "plan.md", b"# Heading\n\nBody text.",
                                title="My own title"))
    assert document.title == "My own title"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "contains no text"),
        ("broken.pdf", make_pdf(["Some text here."])[:300], "damaged"),
        ("broken.docx", make_docx()[:2000], "damaged"),
        ("bomb.docx", make_bomb(part_megabytes=200), "more data than we accept"),
    ],
)
def test_bad_files_end_failed_with_a_reason_and_no_chunks(
    alice_api: ApiClient, name: str, data: bytes, reason: str
) -> None:
    document = processed(upload(alice_api, name, data))

    assert document.embedding_status == JobStatus.FAILED
    assert reason in document.embedding_error.lower()
    assert "Traceback" not in document.embedding_error
    assert document.content == ""
    assert not Chunk.objects.filter(document=document).exists()


@pytest.mark.parametrize(
    ("name", "data"),
    [("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(200)), ("tool.exe", b"MZ" + bytes(500)),
     ("data.zip", b"PK\x03\x04" + bytes(100)), ("sheet.csv", b"a,b\n1,2\n")],
)
def test_unsupported_types_get_415(alice_api: ApiClient, name: str, data: bytes) -> None:
    response = upload(alice_api, name, data)

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "Accepted types" in response.json()["error"]["message"]
    assert not Document.objects.exists()


@override_settings(UPLOAD_MAX_BYTES=1000)
def test_oversized_uploads_get_413(alice_api: ApiClient) -> None:
    response = upload(alice_api, "big.txt", b"x" * 1001)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Document.objects.exists()


def test_uploads_need_write_access_and_a_file(
    alice_api: ApiClient, bob_api: ApiClient, alice: User, shared_workspace: Workspace
) -> None:
    assert upload(bob_api, "x.txt", b"hi", workspace=shared_workspace.pk).status_code == 403
    assert upload(bob_api, "x.txt", b"hi",
                  workspace=alice.personal_workspace.pk).status_code == 404
    missing = alice_api.client.post("/api/v1/documents/upload", {}, headers=alice_api.headers)
    assert missing.status_code == 422


def test_a_file_too_large_to_index_is_offered_no_retry_but_what_to_do(
    alice_api: ApiClient, settings: Any
) -> None:
    settings.DOCUMENT_MAX_CHARS = 1000
    document = processed(upload(alice_api, "big.txt", b"word " * 300))
    assert document.embedding_status == JobStatus.FAILED
    url = f"/api/v1/documents/{document.pk}/summary"

    state = alice_api.get(url).json()

    assert (state["status"], state["retryable"]) == ("failed", False)
    assert state["error"] == ("The document has more than 1,000 characters of text, the most "
                              "we accept. Split it into smaller files and upload those.")
    # Asking again would fail the same way: refused, and nothing is queued.
    refused = alice_api.post(url)
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == f"The summary cannot be made: {state['error']}"
    assert not Job.objects.filter(kind="documents.summary", object_id=document.pk).exists()
    document.refresh_from_db()
    assert document.summary_status == JobStatus.FAILED
