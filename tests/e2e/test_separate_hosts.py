"""Web and worker as two hosts: separate data directories, nothing shared but
DATABASE_URL and REDIS_URL. An upload taken in by one is parsed and indexed by the other."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from aistack.documents.models import Document, StoredFile
from harness import aistack, free_port, http, kill_group, wait_for, wait_http_ok
from tests.documents.files import make_pdf
from tests.e2e.test_lifecycle import service_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()
            and path.suffix in (".pdf", ".md", ".txt")]


def test_an_upload_to_one_host_is_parsed_by_a_worker_on_another(
    alice: User, clean_redis: None, tmp_path: Path,
) -> None:
    web_host, worker_host = tmp_path / "web-host", tmp_path / "worker-host"
    _, token = api_token_create(user=alice)
    port = free_port()
    web = aistack("web", "--port", str(port), "--workers", "1",
                  env=service_env(web_host), log=tmp_path / "web.log")
    worker = aistack("worker", "--concurrency", "1", env=service_env(worker_host),
                     log=tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{base}/healthz", process=web, log=tmp_path / "web.log")
        pdf = make_pdf(["The lighthouse keeper logs the ferry schedule every dawn."],
                       title="Harbour notes")
        uploaded = requests.post(f"{base}/api/v1/documents/upload",
                                 headers={"Authorization": f"Bearer {token}"},
                                 files={"file": ("harbour.pdf", pdf, "application/pdf")},
                                 timeout=30)
        assert uploaded.status_code == 201, uploaded.text
        document_id = uploaded.json()["id"]

        def indexed() -> bool:
            status = http("GET", f"{base}/api/v1/documents/{document_id}", token=token)[1]
            assert status["embedding_status"] != "failed", status
            return bool(status["embedding_status"] == "complete")

        wait_for(indexed, timeout=120, message="the worker host to index the upload")
        status, found = http("GET", f"{base}/api/v1/search?q=lighthouse+ferry&mode=text",
                             token=token)
        assert status == 200
        assert [hit["document_id"] for hit in found["results"]][:1] == [document_id]
        assert Document.objects.get(pk=document_id).title == "Harbour notes"
        # The original is in PostgreSQL, on neither host's disk.
        name = Document.objects.get(pk=document_id).source_file.name
        assert bytes(StoredFile.objects.get(name=name).content) == pdf
        assert files_under(web_host) == files_under(worker_host) == []

        assert http("DELETE", f"{base}/api/v1/documents/{document_id}", token=token)[0] == 204
        assert not StoredFile.objects.filter(name=name).exists()
    finally:
        for process in (web, worker):
            if process.poll() is None:
                kill_group(process)
