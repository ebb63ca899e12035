"""Structured JSON logs, and a request id that follows a request into its jobs' model calls."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from aistack.documents.models import Document
from aistack.jobs.kinds import JobStatus
from aistack.observability.logging import JsonFormatter, request_id_bind, request_id_forget
from harness import wait_for
from tests.conftest import ApiClient


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "aistack.ai"]
    return [line for line in lines if line["event"] == event]


@pytest.mark.django_db
def test_every_response_carries_its_request_id(alice_api: ApiClient) -> None:
    given = alice_api.request("get", "/api/v1/documents", HTTP_X_REQUEST_ID="trace-42.a")
    made = alice_api.get("/api/v1/documents")
    # An id that could forge log lines or headers is replaced, not echoed.
    forged = alice_api.request("get", "/api/v1/documents", HTTP_X_REQUEST_ID='x", "level": "ok')

    assert given["X-Request-ID"] == "trace-42.a"
    assert len(made["X-Request-ID"]) == 32
    assert forged["X-Request-ID"] not in {'x", "level": "ok', made["X-Request-ID"]}
    assert Client().get("/healthz")["X-Request-ID"]


@pytest.mark.django_db(transaction=True)
def test_the_request_id_follows_a_request_into_its_jobs_model_calls(
    celery_worker: Any, alice: User, alice_api: ApiClient, use_models: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_models("scripted:echo", embedding="scripted:hash")
    caplog.set_level(logging.INFO, logger="aistack.ai")

    created = alice_api.post("/api/v1/documents", {"title": "Deploys",
                                                   "content": "Deploys happen on Tuesdays."},
                             HTTP_X_REQUEST_ID="req-from-the-client")
    document_id = created.json()["id"]
    wait_for(lambda: Document.objects.get(pk=document_id).summary_status == JobStatus.COMPLETE,
             message="the summary job")

    calls = _lines(caplog, "ai.attempt")
    summary = next(line for line in calls if line["feature"] == "summary")
    assert summary["request_id"] == "req-from-the-client"
    assert summary["task"] == "aistack.documents.tasks.document_summarize"
    assert summary["provider_request_id"].startswith("scripted-")
    # The indexing job the same request enqueued carries it as well.
    assert {line["request_id"] for line in calls} == {"req-from-the-client"}


def test_library_records_are_json_lines_with_the_context() -> None:
    formatter = JsonFormatter()
    request_id_bind("req-7", path="/api/v1/ask")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord("django.request", logging.ERROR, __file__, 1,
                                       "Internal error: %s", ("/api/v1/ask",), sys.exc_info())
        line = json.loads(formatter.format(record))
    finally:
        request_id_forget()

    assert line["event"] == "Internal error: /api/v1/ask"
    assert (line["level"], line["logger"]) == ("error", "django.request")
    assert (line["request_id"], line["path"]) == ("req-7", "/api/v1/ask")
    assert "ValueError: boom" in line["exception"]
    assert line["timestamp"].endswith("Z")
