"""Summaries: a job with a state machine, a versioned cache, single flight, usage."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from aistack.accounts.models import Workspace
from aistack.accounts.services import api_token_create
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.ai.exceptions import Rejected
from aistack.ai.prompts import PromptTemplate
from aistack.documents import summaries
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update
from aistack.documents.summaries import summary_version
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.redis import locks
from aistack.redis.locks import single_flight
from aistack.usage.models import UsageRecord
from harness import wait_for
from tests.conftest import ApiClient

CONTENT = "Deploys happen on Tuesdays. Rollbacks need a second reviewer. Freezes start in December."


def summary_calls() -> list[scripted.Call]:
    return [call for call in scripted.calls() if call.operation == "complete"]


def summary_status(document: Document) -> str:
    document.refresh_from_db()
    return document.summary_status


def seen_statuses(document: Document, until: set[str], timeout: float = 30) -> list[str]:
    """Poll the document's summary status, returning each distinct one until a final one."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = summary_status(document)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in until:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no final status, saw {seen}")


@pytest.mark.django_db(transaction=True)
def test_creating_a_document_summarizes_it_before_anyone_asks(
    celery_worker: Any, alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None]
) -> None:
    scripted_chat(latency=1.0)
    scripted.script("echo", Reply(text="Deploys are on Tuesdays."))

    started = time.monotonic()
    response = alice_api.post("/api/v1/documents", {"title": "Deploys", "content": CONTENT})
    took = time.monotonic() - started

    assert response.status_code == 201
    assert took < 0.5  # the model's second is spent in the worker, not in the request
    assert response.json()["summary_status"] == JobStatus.PENDING
    document = Document.objects.get(pk=response.json()["id"])
    assert seen_statuses(document, until={"complete", "failed"}) == [
        "pending", "processing", "complete"]

    body = alice_api.get(f"/api/v1/documents/{document.pk}/summary").json()

    assert body == {"status": "complete", "summary": "Deploys are on Tuesdays.",
                    "summary_html": "<p>Deploys are on Tuesdays.</p>\n", "error": "",
                    "stale": False, "extractive": False, "retryable": True}
    assert len(summary_calls()) == 1  # the read was a cache hit
    row = UsageRecord.objects.get(feature="summary")
    assert (row.object_id, row.user_id, row.workspace_id) == (
        document.pk, alice.pk, document.workspace_id)
    assert row.prompt_version == summaries.SUMMARY_PROMPT.version
    # The model was given the document to summarize, in a user turn every provider takes.
    assert CONTENT in summary_calls()[0].messages[-1]


def test_a_cold_cache_is_served_from_postgresql_without_a_model_call(
    alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None]
) -> None:
    scripted.script("echo", Reply(text="Once."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    first = alice_api.get(f"/api/v1/documents/{document.pk}/summary").json()
    key = summary_version(document=document).cache_key
    assert cache.get(key) is not None
    cache.clear()

    again = alice_api.get(f"/api/v1/documents/{document.pk}/summary").json()

    assert first["summary"] == again["summary"] == "Once."
    assert len(summary_calls()) == 1
    assert cache.get(key) is not None  # and the cache is warm again


def test_the_cache_key_holds_every_part_of_the_version(alice: User, settings: Any) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)

    key = summary_version(document=document).cache_key

    assert key == (f"summary:{document.workspace_id}:{document.pk}:{document.content_hash}/"
                   f"{summaries.SUMMARY_PROMPT.version}/local:extractive")
    assert settings.SUMMARY_CACHE_SECONDS == 7 * 24 * 3600


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_cold_reads_make_one_model_call(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None], settings: Any
) -> None:
    # Followers may wait for the whole model call, so every reader gets the summary.
    settings.SUMMARY_READ_WAIT_SECONDS = 5.0
    document = Document.objects.create(workspace=alice.personal_workspace, title="Deploys",
                                       content=CONTENT, author=alice)
    scripted_chat(latency=1.5)
    scripted.script("echo", Reply(text="Made once."))
    _, token = api_token_create(user=alice)

    def read(_: int) -> dict[str, Any]:
        connection = http.client.HTTPConnection(asgi_url, timeout=30)
        connection.request("GET", f"/api/v1/documents/{document.pk}/summary",
                           headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
        connection.close()
        return body

    with ThreadPoolExecutor(max_workers=50) as pool:
        bodies = list(pool.map(read, range(50)))

    assert len(summary_calls()) == 1
    assert UsageRecord.objects.filter(feature="summary", object_id=document.pk).count() == 1
    assert {(b["status"], b["summary"]) for b in bodies} == {("complete", "Made once.")}


def test_a_changed_prompt_template_is_not_served_the_old_entry(
    alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted.script("echo", Reply(text="From the first prompt."),
                    Reply(text="From the edited prompt."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    url = f"/api/v1/documents/{document.pk}/summary"
    assert alice_api.get(url).json()["summary"] == "From the first prompt."
    old_key = summary_version(document=document).cache_key

    edited = PromptTemplate(name="summary",
                            system=summaries.SUMMARY_PROMPT.system + " Be terse.")
    monkeypatch.setattr(summaries, "SUMMARY_PROMPT", edited)

    body = alice_api.get(url).json()

    assert body["summary"] == "From the edited prompt."
    assert len(summary_calls()) == 2
    assert cache.get(old_key) is not None  # still there, but under a key no longer asked for
    assert summary_version(document=document).cache_key != old_key
    assert UsageRecord.objects.filter(feature="summary").latest("pk").prompt_version == (
        edited.version)


@pytest.mark.django_db(transaction=True)
def test_after_an_edit_readers_see_the_previous_summary_marked_stale(
    celery_worker: Any, alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None],
    settings: Any,
) -> None:
    scripted_chat(latency=1.5)
    scripted.script("echo", Reply(text="The first summary."), Reply(text="The second summary."))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    wait_for(lambda: summary_status(document) == JobStatus.COMPLETE, message="first summary")
    url = f"/api/v1/documents/{document.pk}/summary"
    # Read once, so the warm path has the document's old version cached: the edit must drop it.
    assert alice_api.get(url).json()["summary"] == "The first summary."

    document_update(document=document, content=CONTENT + " Hotfixes skip the queue.")
    document.refresh_from_db()
    lock = f"aistack:lock:{summary_version(document=document).cache_key}"
    wait_for(lambda: locks.redis_client().exists(lock), message="the worker's model call")
    # A reader while the worker writes the new one: told so, shown the old one meanwhile.
    settings.SUMMARY_READ_WAIT_SECONDS = 0.0
    during = alice_api.get(url).json()

    assert during == {"status": "processing", "summary": "The first summary.",
                      "summary_html": "<p>The first summary.</p>\n", "error": "",
                      "stale": True, "extractive": False, "retryable": True}
    wait_for(lambda: summary_status(document) == JobStatus.COMPLETE, message="second summary")
    assert alice_api.get(url).json()["summary"] == "The second summary."
    assert len(summary_calls()) == 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_provider_fails_the_job_after_five_retries(
    celery_worker: Any, alice: User, alice_api: ApiClient, use_models: Callable[..., None],
    settings: Any,
) -> None:
    settings.AI_MAX_ATTEMPTS = 1
    use_models("scripted:unavailable")
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)

    wait_for(lambda: summary_status(document) == JobStatus.FAILED, message="failure")

    job = Job.objects.get(kind="documents.summary", object_id=document.pk)
    assert job.attempts == 6  # the first try and five retries
    body = alice_api.get(f"/api/v1/documents/{document.pk}/summary").json()
    assert body["status"] == "failed"
    assert body["summary"] is None
    # Our words for the failure, never the provider's.
    assert body["error"] == ("Gave up after 6 attempts: "
                             "The AI model is unavailable right now; try again shortly.")
    # Readers do not retry a failed summary: no model call beyond the job's.
    assert UsageRecord.objects.filter(feature="summary").count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_post_retries_a_failed_summary(
    celery_worker: Any, alice: User, alice_api: ApiClient, scripted_chat: Callable[..., None],
) -> None:
    # Refused outright: a permanent failure, not retried.
    scripted.script("echo", Rejected(provider="scripted", status_code=400))
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content=CONTENT, author=alice)
    wait_for(lambda: summary_status(document) == JobStatus.FAILED, message="failure")
    url = f"/api/v1/documents/{document.pk}/summary"
    assert alice_api.get(url).json()["error"] == (
        "The AI provider could not give a usable answer.")
    scripted.reset()
    scripted.script("echo", Reply(text="Second time lucky."))

    response = alice_api.post(url)

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    wait_for(lambda: summary_status(document) == JobStatus.COMPLETE, message="retry")
    assert alice_api.get(url).json()["summary"] == "Second time lucky."
    # A summary that is current is not made again.
    assert alice_api.post(url).json()["status"] == "complete"
    assert len(summary_calls()) == 1


def test_summaries_are_read_by_members_and_requested_by_writers(
    alice: User, bob: User, bob_api: ApiClient, shared_workspace: Workspace,
    scripted_chat: Callable[..., None],
) -> None:
    scripted.script("echo", Reply(text="Shared."))
    mine = document_create(workspace=shared_workspace, title="Team", content=CONTENT,
                           author=alice)
    private = document_create(workspace=alice.personal_workspace, title="Mine",
                              content=CONTENT, author=alice)

    assert bob_api.get(f"/api/v1/documents/{mine.pk}/summary").json()["summary"] == "Shared."
    assert bob_api.post(f"/api/v1/documents/{mine.pk}/summary").status_code == 403
    assert bob_api.get(f"/api/v1/documents/{private.pk}/summary").status_code == 404
    assert bob_api.post(f"/api/v1/documents/{private.pk}/summary").status_code == 404


def test_the_lock_of_a_holder_that_died_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "LOCK_TTL_SECONDS", 0.5)
    # A holder that dies never releases, and never renews: simulate one by taking the
    # key the way the lock does and walking away.
    dead = locks.redis_client().lock("aistack:lock:test-key", timeout=0.5, blocking=False)
    assert dead.acquire()

    with single_flight("test-key") as leader:
        assert not leader
    time.sleep(0.6)
    with single_flight("test-key") as leader:
        assert leader
        # Renewed while held, even past its time to live.
        time.sleep(0.8)
        with single_flight("test-key") as other:
            assert not other
    with single_flight("test-key") as leader:
        assert leader
