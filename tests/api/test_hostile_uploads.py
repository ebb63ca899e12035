"""Hostile uploads over real HTTP, parsed by a real worker: each ends in a clear 4xx or a
document with a status and a reason, and the worker goes on working."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from urllib3 import encode_multipart_formdata

from aistack.accounts.services import api_token_create
from aistack.documents.models import Document
from aistack.jobs.kinds import JobStatus
from aistack.retrieval.models import Chunk
from harness import wait_for
from tests.documents.files import garbage, make_bomb, make_docx, make_pdf, make_zip

pytestmark = pytest.mark.django_db(transaction=True)

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
UPLOAD_LIMIT = 2_000_000
DEPTH = 100_000
DEEP_HTML = ("<html><head><title>Deep</title></head><body><p>before</p>" + "<div>" * DEPTH
             + "deep" + "</div>" * DEPTH + "<p>after</p></body></html>").encode()
NOT_WORD = make_zip({"notes/readme.txt": b"hello", "notes/data.csv": b"a,b"})
XLSX = make_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<x/>"})


@pytest.fixture
def models(use_models: Callable[..., None], scripted_chat: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


@pytest.fixture
def uploads(settings: Any, tmp_path: Path, models: None, alice: User, asgi_url: str,
            celery_worker: Any) -> Iterator[Callable[..., requests.Response]]:
    """POST files to alice's upload endpoint over HTTP; a worker processes what is accepted.

    The worker comes last, so it stops before the settings it works with are restored.
    """
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.UPLOAD_MAX_BYTES = UPLOAD_LIMIT
    _, token = api_token_create(user=alice)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def upload(name: str, data: bytes, content_type: str) -> requests.Response:
        return session.post(f"http://{asgi_url}/api/v1/documents/upload",
                            files={"file": (name, data, content_type)}, timeout=60)

    yield upload
    session.close()


def settled(document_id: int) -> Document:
    return wait_for(lambda: Document.objects.filter(
        pk=document_id, embedding_status__in=[JobStatus.COMPLETE, JobStatus.FAILED]).first(),
        timeout=60, message=f"document {document_id} to be processed")


@pytest.mark.parametrize(
    ("name", "data", "content_type", "reason"),
    [
        ("empty.txt", b"", "text/plain", "contains no text"),
        ("broken.pdf", make_pdf(["Some text here."])[:300], "application/pdf", "damaged"),
        ("broken.docx", make_docx()[:2000], DOCX_MIME, "damaged"),
        ("bomb.docx", make_bomb(part_megabytes=200), DOCX_MIME, "more data than we accept"),
        ("notes.docx", NOT_WORD, DOCX_MIME, "zip archive that is not a word document"),
    ],
)
def test_accepted_files_that_cannot_be_read_fail_with_a_reason(
    uploads: Callable[..., requests.Response], name: str, data: bytes, content_type: str,
    reason: str,
) -> None:
    response = uploads(name, data, content_type)
    assert response.status_code == 201, response.text

    document = settled(response.json()["id"])

    assert document.embedding_status == JobStatus.FAILED
    assert reason in document.embedding_error.lower()
    assert "Traceback" not in document.embedding_error
    assert not Chunk.objects.filter(document=document).exists()
    # The worker that failed it goes on: the next upload is processed.
    follow_up = settled(uploads("after.txt", b"The worker survived.", "text/plain").json()["id"])
    assert follow_up.embedding_status == JobStatus.COMPLETE


@pytest.mark.parametrize(
    ("name", "data", "content_type", "text"),
    [
        ("deep.html", DEEP_HTML, "text/html", "before\n\ndeep\n\nafter"),
        # Mislabelled: the content decides how a file is read, not its name or type.
        ("paper.txt", make_pdf(["A PDF saved as text."]), "text/plain", "A PDF saved as text."),
        ("notes.pdf", b"Plain notes saved as a PDF.", "application/pdf",
         "Plain notes saved as a PDF."),
        ("page.md", b"<!DOCTYPE html><title>T</title><p>An HTML page.</p>", "text/markdown",
         "An HTML page."),
        ("report.txt", make_docx(), "text/plain", "Hire two engineers."),
    ],
)
def test_hostile_or_mislabelled_files_that_hold_text_are_read(
    uploads: Callable[..., requests.Response], name: str, data: bytes, content_type: str,
    text: str,
) -> None:
    response = uploads(name, data, content_type)
    assert response.status_code == 201, response.text

    document = settled(response.json()["id"])

    assert document.embedding_status == JobStatus.COMPLETE, document.embedding_error
    assert text in document.content
    assert Chunk.objects.filter(document=document).exists()


@pytest.mark.parametrize(
    ("name", "data", "content_type", "status", "code"),
    [
        ("sheet.docx", XLSX, DOCX_MIME, 415, "unsupported_media_type"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(200), "text/plain", 415,
         "unsupported_media_type"),
        ("data.txt", garbage(8192), "text/plain", 415, "unsupported_media_type"),
        ("setup.pdf", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(500), "application/pdf", 415,
         "unsupported_media_type"),
        ("huge.txt", b"a" * (UPLOAD_LIMIT + 1), "text/plain", 413, "payload_too_large"),
        ("huge.txt", b"a" * (UPLOAD_LIMIT * 5), "text/plain", 413, "payload_too_large"),
    ],
)
def test_files_that_are_not_documents_get_a_clear_4xx(
    uploads: Callable[..., requests.Response], name: str, data: bytes, content_type: str,
    status: int, code: str,
) -> None:
    response = uploads(name, data, content_type)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not Document.objects.exists()


def test_a_chunked_upload_without_a_length_is_refused(
    uploads: Callable[..., requests.Response], asgi_url: str, alice: User,
) -> None:
    body, content_type = encode_multipart_formdata(
        {"file": ("huge.txt", b"a" * (UPLOAD_LIMIT * 2), "text/plain")})
    _, token = api_token_create(user=alice)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    # A generator body goes out with Transfer-Encoding: chunked and no Content-Length.
    response = requests.post(f"http://{asgi_url}/api/v1/documents/upload", data=chunks(),
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": content_type}, timeout=60)

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert not Document.objects.exists()


def test_form_data_that_cannot_be_read_is_a_400(asgi_url: str, alice: User) -> None:
    _, token = api_token_create(user=alice)
    url = f"http://{asgi_url}/api/v1/documents/upload"
    headers = {"Authorization": f"Bearer {token}"}

    no_boundary = requests.post(url, data=b"--x\r\n\r\nhello\r\n--x--\r\n", timeout=30,
                                headers={**headers, "Content-Type": "multipart/form-data"})
    long_headers = requests.post(url, files={"file": ("L" * 1000 + ".txt", b"x", "text/plain")},
                                 headers=headers, timeout=30)

    for response in (no_boundary, long_headers):
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "bad_request"
    assert not Document.objects.exists()
