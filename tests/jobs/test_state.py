"""Claiming, finishing and reconciling jobs: the rules that keep work exactly-once in effect."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from aistack.celery import app as celery_app
from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.documents.summaries import DOCUMENT_SUMMARY
from aistack.jobs import kinds
from aistack.jobs.broker import queue_depths
from aistack.jobs.exceptions import JobSuperseded
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.jobs.services import (
    BULK_QUEUE,
    INTERACTIVE_QUEUE,
    job_claim,
    job_enqueue,
    job_fail,
    job_reconcile,
)


def queue_lists() -> list[str]:
    """Return the broker's lists of every queue, one per message priority."""
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        return [channel._q_for_pri(queue, p) for p in channel.priority_steps
                for queue in (INTERACTIVE_QUEUE, BULK_QUEUE)]


def queued_messages() -> int:
    return sum(queue_depths().values())


@pytest.fixture
def document(alice: User) -> Document:
    return document_create(workspace=alice.personal_workspace, title="T", content="Some text.",
                           author=alice)


def job_of(document: Document) -> Job:
    return Job.objects.get(kind=DOCUMENT_INDEX.name, object_id=document.pk)


def test_a_job_is_claimed_once(document: Document) -> None:
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w1")

    assert run is not None and run.attempt == 1
    assert job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w2") is None
    document.refresh_from_db()
    assert document.embedding_status == JobStatus.PROCESSING


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(
    document: Document,
) -> None:
    old = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="dead-worker")
    assert old is not None
    Job.objects.filter(pk=job_of(document).pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    new = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="live-worker")

    assert new is not None and new.attempt == 2
    with pytest.raises(JobSuperseded), old.finishing():
        pass
    with new.finishing():
        pass
    assert job_of(document).status == JobStatus.COMPLETE


def test_an_edit_during_a_run_supersedes_it(document: Document) -> None:
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w1")
    assert run is not None

    job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk, workspace_id=document.workspace_id)

    with pytest.raises(JobSuperseded), run.finishing():
        pass
    job = job_of(document)
    assert job.status == JobStatus.PENDING and job.generation == 2


def test_results_written_by_a_superseded_run_are_rolled_back(document: Document) -> None:
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w1")
    assert run is not None
    job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk, workspace_id=document.workspace_id)

    with pytest.raises(JobSuperseded), run.finishing():
        Document.objects.filter(pk=document.pk).update(title="written by stale run")

    document.refresh_from_db()
    assert document.title == "T"


def test_failed_jobs_keep_their_reason_and_can_be_requeued(document: Document) -> None:
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w1")
    assert run is not None
    job_fail(run=run, error="The file is not a valid PDF.")

    document.refresh_from_db()
    assert (document.embedding_status, document.embedding_error) == (
        JobStatus.FAILED, "The file is not a valid PDF.")
    assert job_claim(kind=DOCUMENT_INDEX, object_id=document.pk) is None

    job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk, workspace_id=document.workspace_id)
    document.refresh_from_db()
    assert (document.embedding_status, document.embedding_error) == (JobStatus.PENDING, "")


def test_a_backlog_in_the_broker_is_not_sent_again_only_what_it_lost(
    alice: User, clean_redis: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(20):
            document_create(workspace=alice.personal_workspace, title=f"Doc {n}",
                            content="Some text.", author=alice)
    Job.objects.update(enqueued_at=timezone.now() - timedelta(hours=1))
    queued = queued_messages()
    assert queued == Job.objects.filter(status=JobStatus.PENDING).count() == 40

    # Waiting far past the timeout, but every message is there: a backlog, nothing to send.
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            assert job_reconcile() == 0
    assert queued_messages() == queued

    with celery_app.connection_for_write() as connection:
        client = connection.default_channel.client
        lost = 0
        for key in queue_lists():
            while lost < 5 and client.rpop(key) is not None:
                lost += 1
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 5
    assert queued_messages() == queued
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 0

    with celery_app.connection_for_write() as connection:
        connection.default_channel.client.flushdb()
    with django_capture_on_commit_callbacks(execute=True):
        # Everything is lost; the five just sent again are not stale yet.
        assert job_reconcile() == 35
    assert queued_messages() == 35


def take_message(task: str) -> None:
    """Move the queued message of ``task`` to the taken ones, as a worker's fetch does."""
    with celery_app.connection_for_write() as connection:
        client = connection.default_channel.client
        for key in queue_lists():
            for raw in client.lrange(key, 0, -1):
                if json.loads(raw)["headers"]["task"] == task:
                    client.lrem(key, 1, raw)
                    client.hset("unacked", f"tag-{task}",
                                json.dumps([json.loads(raw), "", "celery"]))
                    return
    raise AssertionError(f"no queued message of {task}")


def test_a_job_whose_worker_died_holding_its_message_is_sent_again(
    alice: User, clean_redis: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        document = document_create(workspace=alice.personal_workspace, title="Taken",
                                   content="Text.", author=alice)
    Job.objects.filter(kind=DOCUMENT_SUMMARY.name).delete()
    take_message(DOCUMENT_SUMMARY.task_name)
    take_message(DOCUMENT_INDEX.task_name)

    # A worker just took the message: it is about to start the job.
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 0
    # It started it: the message is the running job's.
    assert job_claim(kind=DOCUMENT_INDEX, object_id=document.pk, owner="w") is not None
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 0
    assert queued_messages() == 0

    # It never started it, and long after it is still taken: that worker died with it,
    # and the broker would hand it on only after its visibility timeout (an hour).
    Job.objects.update(status=JobStatus.PENDING, owner="", lease_expires_at=None,
                       enqueued_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 1
    assert queued_messages() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 0


def test_taken_messages_of_other_tasks_hide_no_lost_job(
    alice: User, clean_redis: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        document_create(workspace=alice.personal_workspace, title="Lost", content="Text.",
                        author=alice)
    Job.objects.filter(kind=DOCUMENT_SUMMARY.name).delete()
    Job.objects.update(enqueued_at=timezone.now() - timedelta(hours=1))
    # The reconciler runs as a task and holds its own message meanwhile: that one is not
    # the job's, which is lost.
    celery_app.send_task("aistack.jobs.tasks.reconcile")
    take_message("aistack.jobs.tasks.reconcile")
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 1
    assert queued_messages() == 1


def test_reconciler_redelivers_lost_and_abandoned_work_only(
    alice: User, clean_redis: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    workspace = alice.personal_workspace
    with django_capture_on_commit_callbacks(execute=False):
        lost = document_create(workspace=workspace, title="lost", content="a", author=alice)
        abandoned = document_create(workspace=workspace, title="dead", content="b", author=alice)
        fresh = document_create(workspace=workspace, title="fresh", content="c", author=alice)
        running = document_create(workspace=workspace, title="running", content="d", author=alice)
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(kind=DOCUMENT_INDEX.name, object_id=lost.pk).update(enqueued_at=long_ago)
    for doc in (abandoned, running):
        assert job_claim(kind=DOCUMENT_INDEX, object_id=doc.pk, owner="w") is not None
    Job.objects.filter(kind=DOCUMENT_INDEX.name, object_id=abandoned.pk).update(
        lease_expires_at=long_ago)

    with django_capture_on_commit_callbacks(execute=True):
        resent = job_reconcile()

    assert resent == 2
    assert queued_messages() == 2
    assert job_of(lost).status == JobStatus.PENDING
    assert job_of(abandoned).status == JobStatus.PENDING and job_of(abandoned).owner == ""
    assert job_of(fresh).enqueued_at > long_ago
    assert job_of(running).status == JobStatus.PROCESSING
    # Just re-delivered: not sent again on the next pass.
    with django_capture_on_commit_callbacks(execute=True):
        assert job_reconcile() == 0


def test_a_batch_claim_takes_at_most_its_limit_and_never_twice(alice: User) -> None:
    from aistack.documents.services import documents_import
    from aistack.jobs.services import jobs_claim

    ids = [d.pk for d in documents_import(workspace=alice.personal_workspace, author=alice,
                                          items=[(f"D{n}", "text") for n in range(5)],
                                          deliver=False, summarize=False)]
    Job.objects.filter(object_id=ids[4]).update(
        enqueued_at=timezone.now() + timedelta(minutes=1))  # waiting out a retry backoff

    first = jobs_claim(kind=DOCUMENT_INDEX, object_ids=ids, limit=2, owner="a", due_only=True)
    rest = jobs_claim(kind=DOCUMENT_INDEX, object_ids=ids, limit=10, owner="b", due_only=True)

    assert [run.object_id for run in first] == ids[:2]
    assert [run.object_id for run in rest] == ids[2:4]
    assert {run.attempt for run in first + rest} == {1}
    # Without due_only the job in backoff may be taken too (a re-delivered message).
    late = jobs_claim(kind=DOCUMENT_INDEX, object_ids=ids, limit=10, owner="c")
    assert [run.object_id for run in late] == [ids[4]]
    statuses = dict(Document.objects.filter(pk__in=ids).values_list("pk", "embedding_status"))
    assert [statuses[pk] for pk in ids[:4]] == [JobStatus.PROCESSING] * 4


def test_every_job_task_acks_late_and_goes_back_to_the_queue_if_its_worker_dies() -> None:
    names = kinds.task_names()
    assert {"aistack.documents.tasks.document_index",
            "aistack.retrieval.tasks.chunks_reembed"} <= names
    for name in names:
        task = celery_app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost and task.ignore_result, name
