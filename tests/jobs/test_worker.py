"""Jobs run by a real Celery worker over the real Redis broker."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from aistack.celery import app as celery_app
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update
from aistack.jobs import kinds
from aistack.jobs.exceptions import TransientJobError
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.models import Job
from aistack.jobs.runner import run_job
from aistack.jobs.services import JobRun, job_enqueue
from aistack.retrieval.models import Chunk
from harness import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PARAGRAPH = (
    "The on-call engineer acknowledges every alert within five minutes. "
    "Severity one incidents page the incident commander at once. "
    "A blameless postmortem follows every serious incident within five working days. "
)


def status_of(document: Document) -> str:
    document.refresh_from_db()
    return document.embedding_status


def test_a_new_document_is_chunked_in_the_background(celery_worker: Any, alice: User) -> None:
    content = "\n\n".join(PARAGRAPH * (n + 1) for n in range(12))
    document = document_create(workspace=alice.personal_workspace, title="Guide",
                               content=content, author=alice)

    wait_for(lambda: status_of(document) == JobStatus.COMPLETE, message="chunking")

    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    assert len(chunks) > 3
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert content[chunk.start_char:chunk.end_char] == chunk.text
        assert 0 < chunk.token_count <= settings.CHUNK_MAX_TOKENS
        assert chunk.workspace_id == document.workspace_id
    # Consecutive chunks overlap, and together they cover the whole text.
    assert any(b.start_char < a.end_char for a, b in pairwise(chunks))
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(content.rstrip())


def test_an_edit_replaces_the_chunks(celery_worker: Any, alice: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Guide",
                               content=PARAGRAPH, author=alice)
    wait_for(lambda: status_of(document) == JobStatus.COMPLETE, message="first chunking")

    document_update(document=document, content="Completely different words now.")

    wait_for(lambda: status_of(document) == JobStatus.COMPLETE
             and Chunk.objects.filter(document=document, text__contains="different").exists(),
             message="re-chunking")
    assert list(Chunk.objects.filter(document=document).values_list("text", flat=True)) == [
        "Completely different words now."]


def test_duplicate_deliveries_change_nothing(celery_worker: Any, alice: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Guide",
                               content=PARAGRAPH * 20, author=alice)
    wait_for(lambda: status_of(document) == JobStatus.COMPLETE, message="chunking")
    before = list(Chunk.objects.filter(document=document).values_list("pk", "text"))
    attempts = Job.objects.get(kind="documents.index", object_id=document.pk).attempts

    results = [celery_app.send_task("aistack.documents.tasks.document_index", args=[document.pk])
               for _ in range(3)]
    wait_for(lambda: celery_app.connection_for_write().default_channel.client.llen("celery") == 0,
             message="deliveries consumed")
    for result in results:
        wait_for(lambda r=result: r.id not in _active_ids(), message="deliveries finished")

    assert list(Chunk.objects.filter(document=document).values_list("pk", "text")) == before
    assert Job.objects.get(kind="documents.index", object_id=document.pk).attempts == attempts


def _active_ids() -> set[str]:
    from celery.worker.state import active_requests

    return {request.id for request in active_requests}


# A job kind of the tests' own, to inject failures through the real runner and worker.
FLAKY = kinds.register(
    JobKind(name="tests.flaky", task_name="tests.flaky", model_label="documents.Document",
            status_field="summary_status", error_field="summary_error")
)


def _flaky_work(run: JobRun) -> None:
    document = Document.objects.get(pk=run.object_id)
    failures, _, kind = document.title.partition(" ")
    if kind == "permanent":
        raise ValueError("The text could not be parsed.")
    if run.attempt <= int(failures):
        raise TransientJobError(f"provider overloaded (attempt {run.attempt})")
    with run.finishing():
        Document.objects.filter(pk=run.object_id).update(content=f"done on {run.attempt}")


@celery_app.task(bind=True, name="tests.flaky", acks_late=True, reject_on_worker_lost=True)
def flaky(self: Any, document_id: int) -> None:
    run_job(self, kind=FLAKY, object_id=document_id, work=_flaky_work)


def flaky_document(alice: User, title: str) -> Document:
    document = Document.objects.create(workspace=alice.personal_workspace, title=title,
                                       content="x", author=alice)
    job_enqueue(kind=FLAKY, object_id=document.pk, workspace_id=document.workspace_id)
    return document


def finished(document: Document) -> bool:
    document.refresh_from_db()
    return document.summary_status in {JobStatus.COMPLETE, JobStatus.FAILED}


def test_transient_failures_are_retried_until_they_succeed(celery_worker: Any,
                                                           alice: User) -> None:
    document = flaky_document(alice, "3 transient")

    wait_for(lambda: finished(document), message="retries")

    assert document.summary_status == JobStatus.COMPLETE
    assert document.content == "done on 4"
    assert Job.objects.get(kind=FLAKY.name, object_id=document.pk).attempts == 4


def test_five_retries_then_failed_with_the_reason(celery_worker: Any, alice: User) -> None:
    document = flaky_document(alice, "99 transient")

    wait_for(lambda: finished(document), message="giving up")

    assert document.summary_status == JobStatus.FAILED
    assert "Gave up after 6 attempts" in document.summary_error
    assert "provider overloaded" in document.summary_error
    assert Job.objects.get(kind=FLAKY.name, object_id=document.pk).attempts == 6


def test_permanent_failures_are_not_retried(celery_worker: Any, alice: User) -> None:
    document = flaky_document(alice, "0 permanent")

    wait_for(lambda: finished(document), message="failure")

    assert document.summary_status == JobStatus.FAILED
    assert document.summary_error == "The text could not be parsed."
    assert Job.objects.get(kind=FLAKY.name, object_id=document.pk).attempts == 1
