"""Where uploaded originals live: PostgreSQL by default, an S3-compatible bucket when
configured (against moto's S3 server, through boto3), never a process's own disk."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from moto.server import ThreadedMotoServer

from aistack.documents.models import Document, StoredFile
from aistack.documents.services import document_delete
from aistack.documents.storage import DatabaseStorage
from harness import free_port
from tests.conftest import ApiClient
from tests.documents.files import make_pdf
from tests.retrieval.helpers import index_now

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "aistack-originals"


def upload(api: ApiClient, name: str, data: bytes) -> Document:
    response = api.client.post("/api/v1/documents/upload",
                               {"file": SimpleUploadedFile(name, data)}, headers=api.headers)
    assert response.status_code == 201, response.content
    return Document.objects.get(pk=response.json()["id"])


def delete_rolled_back(document: Document) -> None:
    try:
        with transaction.atomic():
            document_delete(document=Document.objects.get(pk=document.pk))
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass


@pytest.fixture(autouse=True)
def media_in_tmp(tmp_path: Path, settings: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def test_an_original_is_kept_in_postgresql_and_goes_with_its_document(
    alice_api: ApiClient, tmp_path: Path,
) -> None:
    pdf = make_pdf(["Quarterly revenue grew in every region."], title="Q3")
    document = upload(alice_api, "q3.pdf", pdf)

    assert isinstance(default_storage, DatabaseStorage)
    stored = StoredFile.objects.get(name=document.source_file.name)
    assert (bytes(stored.content), stored.size) == (pdf, len(pdf))
    assert not (tmp_path / "media").exists()
    assert "Quarterly revenue" in index_now(document).content

    # A delete rolled back keeps the original; a committed one takes it.
    delete_rolled_back(document)
    assert StoredFile.objects.filter(pk=stored.pk).exists()
    document_delete(document=Document.objects.get(pk=document.pk))
    assert not StoredFile.objects.filter(pk=stored.pk).exists()


def test_originals_an_earlier_release_kept_on_disk_are_read_then_copied_in(
    alice_api: ApiClient, tmp_path: Path,
) -> None:
    document = upload(alice_api, "notes.md", b"# Notes\n\nThe ferry leaves at dawn.")
    name = document.source_file.name
    # As an earlier release left it: on the web host's disk, not in PostgreSQL.
    on_disk = tmp_path / "media" / name
    on_disk.parent.mkdir(parents=True)
    on_disk.write_bytes(bytes(StoredFile.objects.get(name=name).content))
    StoredFile.objects.filter(name=name).delete()

    assert "The ferry leaves at dawn." in index_now(document).content
    migration = importlib.import_module("aistack.documents.migrations.0005_stored_file")
    migration.originals_copy(apps, None)

    assert bytes(StoredFile.objects.get(name=name).content) == on_disk.read_bytes()
    document_delete(document=document)
    assert not StoredFile.objects.filter(name=name).exists()
    assert not on_disk.exists()


@pytest.fixture
def s3(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bucket on a local S3-compatible server, as UPLOADS_S3_BUCKET configures it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": endpoint,
                    "region_name": "us-east-1", "default_acl": None,
                    "file_overwrite": False}}}
    try:
        yield client
    finally:
        server.stop()


def keys(client: Any) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_with_a_bucket_configured_originals_go_there_and_are_deleted_after_commit(
    alice_api: ApiClient, s3: Any,
) -> None:
    pdf = make_pdf(["The lighthouse keeper logs the ferry schedule."], title="Harbour")
    document = upload(alice_api, "harbour.pdf", pdf)

    name = document.source_file.name
    assert keys(s3) == [name]
    assert s3.get_object(Bucket=BUCKET, Key=name)["Body"].read() == pdf
    assert not StoredFile.objects.exists()
    assert "lighthouse keeper" in index_now(document).content

    delete_rolled_back(document)
    assert keys(s3) == [name]
    document_delete(document=Document.objects.get(pk=document.pk))
    assert keys(s3) == []


def test_a_name_taken_meanwhile_is_saved_under_another() -> None:
    taken = "uploads/2026/12/notes_Ab3dE9x.md"
    StoredFile.objects.create(name=taken, content=b"first", size=5)

    saved = DatabaseStorage()._save(taken, ContentFile(b"second"))

    assert saved != taken and saved.startswith("uploads/2026/12/notes_")
    assert saved.endswith(".md")
    assert bytes(StoredFile.objects.get(name=saved).content) == b"second"
    assert bytes(StoredFile.objects.get(name=taken).content) == b"first"


def test_two_uploads_of_one_name_keep_their_own_originals(alice_api: ApiClient) -> None:
    first = upload(alice_api, "notes.md", b"# One\n\nFirst text.")
    second = upload(alice_api, "notes.md", b"# Two\n\nSecond text.")

    assert first.source_file.name != second.source_file.name
    assert "First text." in index_now(first).content
    assert "Second text." in index_now(second).content


def test_the_admin_shows_an_uploaded_document(alice_api: ApiClient, client: Any) -> None:
    document = upload(alice_api, "notes.md", b"# Notes\n\nText.")
    admin = User.objects.create_superuser("root", password="correct horse battery staple")
    client.force_login(admin)

    page = client.get(f"/admin/documents/document/{document.pk}/change/")

    assert page.status_code == 200
    assert "notes.md" in page.content.decode()
