"""Regressions found in review: in-process batches, deleted objects, stale saves, bad input."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from aistack.accounts.services import workspace_create
from aistack.documents.indexing import DOCUMENT_INDEX, documents_process_now
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update, documents_import
from aistack.documents.summaries import DOCUMENT_SUMMARY
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.jobs.runner import jobs_work_through
from aistack.jobs.services import JobRun, job_reconcile
from aistack.retrieval.models import WorkspaceCorpus, WorkspaceTerm
from tests.conftest import ApiClient
from tests.jobs.test_worker import FLAKY, _flaky_work


def test_an_in_process_batch_claims_only_what_it_runs(alice: User) -> None:
    documents = documents_import(workspace=alice.personal_workspace, author=alice,
                                 items=[(f"Doc {n}", f"Text number {n}.") for n in range(40)],
                                 deliver=False, summarize=False)
    seen: list[int] = []

    documents_process_now(document_ids=[d.pk for d in documents], progress=seen.append)

    assert sum(seen) == 40
    jobs = Job.objects.filter(kind=DOCUMENT_INDEX.name)
    assert set(jobs.values_list("status", flat=True)) == {JobStatus.COMPLETE}
    # Each job was claimed exactly once: none was stranded and taken again later.
    assert set(jobs.values_list("attempts", flat=True)) == {1}


def test_in_process_work_retries_transient_failures_after_their_backoff(alice: User) -> None:
    document = Document.objects.create(workspace=alice.personal_workspace, title="2 transient",
                                       content="x", author=alice)
    Job.objects.create(kind=FLAKY.name, object_id=document.pk, enqueued_at=document.created_at)

    def work(runs: list[JobRun]) -> None:
        for run in runs:
            _flaky_work(run)

    jobs_work_through(kind=FLAKY, object_ids=[document.pk], work=work, progress=lambda n: None,
                      poll_seconds=0.01)

    job = Job.objects.get(kind=FLAKY.name, object_id=document.pk)
    assert (job.status, job.attempts) == (JobStatus.COMPLETE, 3)


def test_deleting_a_workspace_cleans_up_jobs_and_term_statistics(alice: User) -> None:
    from tests.retrieval.helpers import indexed

    team = workspace_create(owner=alice, name="Team")
    indexed(team, alice, "Unusual", "Zeugma and syzygy are rare words.")
    team_id = team.pk
    assert WorkspaceTerm.objects.get(workspace_id=team_id, lexeme="syzygi").df == 1

    team.delete()  # an ORM cascade, not the delete service

    assert WorkspaceTerm.objects.get(workspace_id=team_id, lexeme="syzygi").df == 0
    assert WorkspaceCorpus.objects.get(workspace_id=team_id).chunks == 0
    assert not Job.objects.exists()
    assert job_reconcile() == 0


def test_an_edit_does_not_overwrite_what_a_worker_just_wrote(alice: User) -> None:
    stale = document_create(workspace=alice.personal_workspace, title="Notes",
                            content="Some notes.", author=alice)
    Document.objects.filter(pk=stale.pk).update(summary="A worker wrote this.",
                                                summary_status=JobStatus.COMPLETE)

    updated = document_update(document=stale, title="Renamed notes")

    assert updated.title == "Renamed notes"
    assert (updated.summary, updated.summary_status) == ("A worker wrote this.",
                                                         JobStatus.COMPLETE)
    # The content did not change, so the summary is not redone.
    assert Job.objects.get(kind=DOCUMENT_SUMMARY.name, object_id=stale.pk).generation == 1


def test_nul_characters_and_absurd_numbers_are_422_not_500(alice_api: ApiClient) -> None:
    bad: list[tuple[str, str, dict[str, Any]]] = [
        ("get", "/api/v1/search", {"q": "a\x00b"}),
        ("get", "/api/v1/documents", {"title": "a\x00b"}),
        ("get", "/api/v1/documents", {"offset": 10**30}),
        ("post", "/api/v1/ask", {"question": "a\x00b"}),
        ("post", "/api/v1/chat", {"prompt": "a\x00b"}),
    ]
    for method, path, params in bad:
        response = getattr(alice_api, method)(path, params)
        assert response.status_code == 422, (path, params, response.content)


def test_the_event_stream_survives_absurd_cursors(alice_api: ApiClient) -> None:
    from aistack.realtime.events import replay_since

    for last_event_id, since in (("9" * 400, None), (None, 1e300), (None, float("nan")),
                                 (None, -5.0)):
        assert 0 <= replay_since(last_event_id=last_event_id, since=since) + 10 < 1e11


def test_uploads_over_the_limit_are_refused_from_their_declared_length(
    alice_api: ApiClient, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 10
    response = alice_api.client.post("/api/v1/documents/upload", data=b"x" * 100_000,
                                     content_type="multipart/form-data; boundary=xyz",
                                     headers=alice_api.headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
