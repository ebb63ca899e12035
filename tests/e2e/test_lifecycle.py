"""SIGTERM, as a container runtime sends it: workers finish their jobs, web drains."""

from __future__ import annotations

import http.client as httpclient
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.retrieval.chunking import chunk_text
from aistack.retrieval.models import Chunk
from aistack.usage.models import UsageRecord
from harness import aistack, clean_env, free_port, http, kill_group, wait_for, wait_http_ok
from tests.e2e.test_worker_kill import database_url_of_test_db

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MODEL_LATENCY = 3.0


def service_env(tmp_path: Path) -> dict[str, str]:
    """Point aistack processes at the test database and Redis, with a slow scripted model."""
    return clean_env(
        AISTACK_HOME=str(tmp_path / "home"),
        DATABASE_URL=database_url_of_test_db(),
        REDIS_URL=settings.REDIS_URL,
        AI_CHAT_MODEL="scripted:echo",
        AI_EMBEDDING_MODEL="scripted:hash",
        AI_SCRIPTED_LATENCY_SECONDS=str(MODEL_LATENCY),
        LOG_LEVEL="INFO",
    )


def test_a_terminated_worker_finishes_its_job_and_hands_back_the_rest(
    alice: User, clean_redis: None, tmp_path: Path
) -> None:
    env = service_env(tmp_path)
    log = tmp_path / "workers.log"
    documents = [
        document_create(workspace=alice.personal_workspace, title=f"Runbook {n}",
                        content=f"Step {n}. " + "Restart the service and watch the logs. " * 40,
                        author=alice).pk
        for n in range(2)
    ]
    jobs = Job.objects.filter(object_id__in=documents)
    assert jobs.count() == 4  # an index and a summary job per document

    first = aistack("worker", "--concurrency", "1", env=env, log=log)
    try:
        running = wait_for(lambda: jobs.filter(status=JobStatus.PROCESSING).first(),
                           timeout=90, message="the worker to take a job")
        first.terminate()
        terminated_at = time.monotonic()
        first.wait(MODEL_LATENCY + 30)
        exited_in = time.monotonic() - terminated_at
    finally:
        if first.poll() is None:
            kill_group(first)
    print(f"worker exited {exited_in:.1f}s after SIGTERM, its job done")

    assert first.returncode == 0
    assert "Warm shutdown" in log.read_text()
    running.refresh_from_db()
    # Finished by the worker that was told to stop, in its first and only attempt.
    assert (running.status, running.attempts) == (JobStatus.COMPLETE, 1)
    handed_back = jobs.exclude(pk=running.pk)
    assert not handed_back.filter(status=JobStatus.PROCESSING).exists()

    second = aistack("worker", "--concurrency", "1", env=env, log=log)
    try:
        wait_for(lambda: jobs.filter(status=JobStatus.COMPLETE).count() == 4, timeout=90,
                 message="the other jobs to complete on another worker")
    finally:
        second.terminate()
        second.wait(30)

    assert list(jobs.values_list("attempts", flat=True)) == [1, 1, 1, 1]
    for document in Document.objects.filter(pk__in=documents):
        assert document.embedding_status == document.summary_status == JobStatus.COMPLETE
        stored = list(Chunk.objects.filter(document=document).values_list("text", flat=True)
                      .order_by("ordinal"))
        assert stored == [spec.text for spec in chunk_text(document.content)]
        summaries = UsageRecord.objects.filter(feature="summary", object_id=document.pk)
        assert summaries.count() == 1


class RawEventStream:
    """Read ``GET /api/v1/events`` to its end, noting whether the server ended it properly."""

    def __init__(self, address: str, token: str) -> None:
        self.connection = httpclient.HTTPConnection(address, timeout=60)
        self.connection.request("GET", "/api/v1/events",
                                headers={"Authorization": f"Bearer {token}"})
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.lines: list[str] = []
        self.ended_cleanly: bool | None = None
        self.ended_at: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            # readline() returns b"" only at the terminating chunk of the body;
            # a connection dropped mid-body raises IncompleteRead instead.
            while line := self.response.readline():
                self.lines.append(line.decode())
            self.ended_cleanly = True
        except (OSError, httpclient.HTTPException):
            self.ended_cleanly = False
        self.ended_at = time.monotonic()


@pytest.mark.parametrize("workers", [1, 2])
def test_web_drains_requests_in_flight_and_ends_event_streams(
    alice: User, clean_redis: None, tmp_path: Path, workers: int
) -> None:
    _, token = api_token_create(user=alice)
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path / "web.log"
    graceful_timeout = 10
    web = aistack("web", "--port", str(port), "--workers", str(workers),
                  "--graceful-timeout", str(graceful_timeout), env=service_env(tmp_path), log=log)
    try:
        wait_http_ok(f"http://{address}/healthz", process=web, log=log)
        stream = RawEventStream(address, token)
        wait_for(lambda: any(line.startswith("retry:") for line in stream.lines),
                 message="the event stream to open")
        answered: list[tuple[int, object]] = []
        slow = threading.Thread(target=lambda: answered.append(http(
            "POST", f"http://{address}/api/v1/chat", token=token,
            body={"prompt": "Who restarts the service?"}, timeout=60)))
        slow.start()
        time.sleep(1.0)  # the request is now waiting on the model

        web.terminate()
        terminated_at = time.monotonic()
        web.wait(graceful_timeout + 10)
        exited_in = time.monotonic() - terminated_at
        slow.join(10)
        stream.reader.join(10)
    finally:
        if web.poll() is None:
            kill_group(web)
    print(f"web ({workers} process(es)) exited {exited_in:.1f}s after SIGTERM")

    status, body = answered[0]
    assert status == 200
    assert isinstance(body, dict) and body["answer"] == "Who restarts the service?"
    assert stream.ended_cleanly is True
    assert stream.ended_at is not None and stream.ended_at - terminated_at < 2.0
    # The request in flight set the pace, not the stream: no waiting out the timeout.
    assert exited_in < MODEL_LATENCY + 2.0
    assert "timeout graceful shutdown exceeded" not in log.read_text()
