"""/metrics over real HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aistack.accounts.services import api_token_create
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from harness import aistack, clean_env, process_tree, stop, wait_for
from tests.e2e.test_worker_kill import database_url_of_test_db

pytestmark = pytest.mark.django_db(transaction=True)


def _get(asgi_url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(asgi_url, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, body


def scrape(asgi_url: str) -> list[Sample]:
    """Fetch /metrics over HTTP and return every sample."""
    status, body = _get(asgi_url, "/metrics")
    assert status == 200, body
    return [sample for family in text_string_to_metric_families(body)
            for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """Return the sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples
               if s.name == name and labels.items() <= s.labels.items())


def test_metrics_cover_requests_models_tokens_caches_and_queues(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None],
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content="Deploys happen on Tuesdays.", author=alice)
    _, token = api_token_create(user=alice)
    auth = {"Authorization": f"Bearer {token}"}
    before = scrape(asgi_url)
    route = "api/v1/documents/<int:document_id>"

    for _ in range(2):
        assert _get(asgi_url, f"/api/v1/documents/{document.pk}", auth)[0] == 200
    assert _get(asgi_url, f"/api/v1/documents/{document.pk}/summary", auth)[0] == 200
    assert _get(asgi_url, f"/api/v1/documents/{document.pk}/summary", auth)[0] == 200
    after = scrape(asgi_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Routes are URL patterns, not paths: one series however many documents there are.
    assert grew("aistack_http_request_duration_seconds_count", route=route, method="GET",
                status="200") == 2
    assert not any(f"documents/{document.pk}" in s.labels.get("route", "") for s in after)
    assert grew("aistack_ai_request_duration_seconds_count", provider="scripted",
                model="scripted:echo", operation="chat", outcome="ok") == 1
    assert grew("aistack_ai_tokens_total", feature="summary", kind="input") > 0
    assert grew("aistack_cache_requests_total", cache="summary", feature="summary",
                result="miss") == 1
    assert grew("aistack_cache_requests_total", cache="summary", feature="summary",
                result="hit") == 1
    assert any(s.name == "aistack_queue_depth" and s.labels == {"queue": "celery"}
               for s in after)


def test_metrics_are_for_loopback_or_the_token_holder(settings: Any) -> None:
    remote = Client(REMOTE_ADDR="203.0.113.9")
    local = Client(REMOTE_ADDR="127.0.0.1")

    assert local.get("/metrics").status_code == 200
    assert local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    refused = remote.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    settings.METRICS_TOKEN = "scrape-secret"
    assert remote.get("/metrics").status_code == 401
    assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = remote.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert allowed.status_code == 200
    assert allowed["Content-Type"].startswith("text/plain")
    assert b"aistack_http_request_duration_seconds" in allowed.content


@pytest.mark.e2e
def test_a_worker_process_exports_its_metrics_through_the_web_process(
    asgi_url: str, alice: User, clean_redis: None, tmp_path: Path,
) -> None:
    env = clean_env(
        AISTACK_HOME=str(tmp_path / "home"), DATABASE_URL=database_url_of_test_db(),
        REDIS_URL=settings.REDIS_URL, PROMETHEUS_MULTIPROC_DIR=str(
            settings.PROMETHEUS_MULTIPROC_DIR),
        AI_CHAT_MODEL="scripted:echo", AI_EMBEDDING_MODEL="scripted:hash", LOG_LEVEL="INFO",
    )
    summary_runs = "aistack_job_duration_seconds_count"
    before = value(scrape(asgi_url), summary_runs, task="documents.summary", outcome="complete")
    worker = aistack("worker", "--concurrency", "1", env=env, log=tmp_path / "worker.log")
    try:
        document = document_create(workspace=alice.personal_workspace, title="Deploys",
                                   content="Deploys happen on Tuesdays.", author=alice)
        wait_for(lambda: Document.objects.get(pk=document.pk).summary_status
                 == JobStatus.COMPLETE, timeout=90, message="the worker to write the summary")
        worker_pids = {process.pid for process in process_tree(worker.pid)}
        # No job ran in this process: what the scrape counts, the worker's files hold.
        after = value(scrape(asgi_url), summary_runs, task="documents.summary",
                      outcome="complete")
        written_by_worker = {int(path.stem.rpartition("_")[2]) for path in
                             settings.PROMETHEUS_MULTIPROC_DIR.glob("histogram_*.db")}
    finally:
        stop(worker)
    assert after == before + 1
    assert written_by_worker & worker_pids


def test_requests_matching_no_url_pattern_share_one_route() -> None:
    client = Client(REMOTE_ADDR="127.0.0.1")
    for path in ("/no/such/page", "/nor/this/one"):
        assert client.get(path).status_code == 404

    samples = [sample for family in text_string_to_metric_families(
        client.get("/metrics").content.decode()) for sample in family.samples]

    assert value(samples, "aistack_http_request_duration_seconds_count", route="unmatched",
                 status="404") >= 2
    assert not any("no/such" in s.labels.get("route", "") for s in samples)
