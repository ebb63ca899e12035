"""Choosing the embedding model on the Models page: tried once, every document embedded
again by the workers, search switched over only when all vectors are made.

Against a loopback server speaking OpenAI's embeddings protocol, through the real SDK,
with a real Celery worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from aistack.ai import (
    embedding_model_for,
    embedding_models,
    setup,
)
from aistack.ai.models import ModelSetup
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.jobs.services import job_claim
from aistack.retrieval import spaces
from aistack.retrieval.models import ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.retrieval.reindex import CHUNKS_REEMBED, documents_reembed, embedding_switch
from aistack.retrieval.selectors import SearchMode, active_space
from aistack.retrieval.services import search
from aistack.retrieval.spaces import spaces_retired_clear
from aistack.usage.types import Attribution
from tests.ai.conftest import follow
from tests.ai.vendors import VendorServer, openai_error, words_embedded
from tests.retrieval.helpers import indexed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("page_follower")]

KEY = "sk-page-key-0123456789abcdef"
LOCAL = "local:all-MiniLM-L6-v2-int8"
PAGE_MODEL = "page:openai:team-embed"


def connect(client: Client, vendor: VendorServer, **fields: str) -> Any:
    return client.post("/models/", {"action": "save", "provider": "compatible",
                                    "base_url": f"{vendor.url}/v1", "api_key": KEY,
                                    "chat_model": "team-model", "fallbacks": "", **fields})


def choose(client: Client, name: str) -> Any:
    response = client.post("/models/embedding/", {"embedding_model": name})
    follow()
    return response


def vectors_by_model() -> dict[str, int]:
    return {space.model: ChunkVector.objects.filter(space=space).count()
            for space in EmbeddingSpace.objects.all()}


def hnsw_indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = "
                       "'retrieval_chunkvector' AND indexname LIKE 'chunkvector_hnsw_%%'")
        return {row[0] for row in cursor.fetchall()}


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def created(user: User, title: str, content: str) -> Document:
    """Create a document and wait for the worker to index it (with a worker running)."""
    document = document_create(workspace=user.personal_workspace, title=title,
                               content=content, author=user)
    wait_for(lambda: Document.objects.get(pk=document.pk).embedding_status == "complete")
    return document


def searched(user: User, query: str) -> list[int]:
    hits = search(workspace_ids=[user.personal_workspace.pk], query=query, k=3,
                  mode=SearchMode.VECTOR, attribution=Attribution(feature="search"))
    return [hit.document_id for hit in hits]


def test_a_model_chosen_on_the_page_serves_search_once_the_workers_embedded_everything(
    browser_of: Client, alice: User, vendor: VendorServer, celery_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As at scale: the new space outgrows exact scans, so it is indexed before it serves.
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 2)
    documents = [created(alice, title, text) for title, text in (
        ("Vacation", "Employees get 25 days of paid vacation every year."),
        ("Parking", "Parking permits renew every January at the front desk."),
        ("Kitchen", "The office kitchen is cleaned every evening."))]
    assert active_space().model == LOCAL  # type: ignore[union-attr]
    vendor.answer = words_embedded(width=16)
    assert connect(browser_of, vendor).status_code == 302

    response = choose(browser_of, "team-embed")

    assert response.status_code == 302
    row = ModelSetup.objects.get()
    assert (row.embedding_model, row.embedding_dimensions) == (PAGE_MODEL, 16)
    # The one call made before saving, with the page's key.
    [tried] = [r for r in vendor.received if r.body and r.body.get("input") == [
        setup.EMBED_TEST_TEXT]]
    assert tried.headers["authorization"] == f"Bearer {KEY}"
    # This process follows within seconds (its worker thread may be reading the change).
    wait_for(lambda: embedding_models["default"].id == PAGE_MODEL, seconds=5)
    # The workers re-embed every document through the page's connection, then switch.
    wait_for(lambda: getattr(active_space(), "model", None) == PAGE_MODEL)
    assert vectors_by_model() == {LOCAL: 3, PAGE_MODEL: 3}
    assert EmbeddingSpace.objects.get(model=LOCAL).status == SpaceStatus.RETIRED
    # The old vectors stay while a search begun before the switch may read them.
    assert spaces_retired_clear() == 0
    old = EmbeddingSpace.objects.get(model=LOCAL)
    assert spaces_retired_clear(grace_seconds=0) == 3
    assert vectors_by_model() == {PAGE_MODEL: 3}
    # (Other tests' spaces leave indexes behind: a flush empties tables, not DDL.)
    assert f"chunkvector_hnsw_{old.pk}" not in hnsw_indexes()
    assert f"chunkvector_hnsw_{active_space().pk}" in hnsw_indexes()  # type: ignore[union-attr]
    assert EmbeddingSpace.objects.get(model=PAGE_MODEL).indexed
    embedded = [text for r in vendor.received if r.path.endswith("/embeddings")
                for text in r.body["input"]]
    assert any("Parking permits renew" in text for text in embedded)
    # Queries are embedded by the new model too, and find the right document.
    assert searched(alice, "parking permits")[0] == documents[1].pk
    assert vendor.received[-1].body["input"] == ["parking permits"]
    # A document added now gets the new model's vectors in its own index job.
    added = created(alice, "Laptops", "Laptops are replaced every three years.")
    assert searched(alice, "laptops replaced")[0] == added.pk
    page = browser_of.get("/models/").content.decode()
    assert f'<dd id="embedding-in-use"><code>{PAGE_MODEL}</code>' in page
    assert "Re-embedding" not in page


def test_the_model_is_called_before_it_is_saved_and_a_failure_saves_nothing(
    browser_of: Client, alice: User, vendor: VendorServer,
) -> None:
    indexed(alice.personal_workspace, alice, "Vacation", "Employees get 25 days of vacation.")
    connect(browser_of, vendor)
    vendor.push(openai_error(404, message="The model `nope` does not exist",
                             kind="invalid_request_error"))

    response = choose(browser_of, "nope")

    assert response.status_code == 422
    page = response.content.decode()
    assert "page:openai:nope did not answer: the model or the address was not found" in page
    assert ModelSetup.objects.get().embedding_model == ""
    assert embedding_models["default"].id == LOCAL
    assert embedding_switch().model == ""  # nothing chosen: nothing to switch
    assert list(EmbeddingSpace.objects.values_list("model", flat=True)) == [LOCAL]


@pytest.mark.parametrize(("name", "says"), [
    ("two words", "A model name has no spaces"),
    ("local:no-such-model", "the local embedding models are"),
])
def test_a_name_that_cannot_work_is_refused_in_plain_words(
    browser_of: Client, name: str, says: str,
) -> None:
    response = choose(browser_of, name)

    assert response.status_code == 422
    assert says in response.content.decode()
    assert not ModelSetup.objects.filter(embedding_model__gt="").exists()


def test_a_remote_model_needs_a_connection_first(browser_of: Client) -> None:
    response = choose(browser_of, "text-embedding-3-small")

    assert response.status_code == 422
    assert "Connect a provider above first" in response.content.decode()


def test_a_switch_abandoned_for_another_model_drops_its_half_built_vectors(
    browser_of: Client, alice: User, vendor: VendorServer,
) -> None:
    """No worker runs here: the switch is driven step by step."""
    workspace = alice.personal_workspace
    first_document = indexed(workspace, alice, "Vacation", "Employees get 25 days of vacation.")
    vendor.answer = words_embedded(width=8)
    connect(browser_of, vendor)
    choose(browser_of, "team-embed")
    first = embedding_switch()
    assert (first.model, first.queued, first.switched) == (PAGE_MODEL, 1, False)
    # A document indexed meanwhile gets vectors in the space being built too.
    indexed(workspace, alice, "Parking", "Parking permits renew every January.")
    assert vectors_by_model() == {LOCAL: 2, PAGE_MODEL: 1}
    building = EmbeddingSpace.objects.get(model=PAGE_MODEL)

    # Back to the built-in model before the switch finished.
    choose(browser_of, LOCAL)
    second = embedding_switch()

    assert second.model == LOCAL and second.dropped == [PAGE_MODEL]
    assert second.vectors_deleted == 1
    assert vectors_by_model() == {LOCAL: 2}
    assert f"chunkvector_hnsw_{building.pk}" not in hnsw_indexes()
    assert active_space().model == LOCAL  # type: ignore[union-attr]
    # The re-embedding queued for the dropped model finds nothing left to build.
    run = job_claim(kind=CHUNKS_REEMBED, object_id=first_document.pk)
    assert run is not None
    calls = len(vendor.received)
    assert documents_reembed(runs=[run]) == 0
    assert len(vendor.received) == calls
    assert vectors_by_model() == {LOCAL: 2}
    assert "Re-embedding" not in browser_of.get("/models/").content.decode()


def test_a_document_that_fails_to_embed_holds_the_switch_and_is_shown(
    browser_of: Client, alice: User, vendor: VendorServer, celery_worker: Any,
) -> None:
    created(alice, "Vacation", "Employees get 25 days of paid vacation.")
    created(alice, "Poison", "This text the server refuses to embed.")
    embed = words_embedded(width=8)

    def answer(path: str, body: Any) -> Any:
        if any("refuses" in text for text in body["input"]):
            return openai_error(400, message="input rejected", kind="invalid_request_error")
        return embed(path, body)

    vendor.answer = answer
    connect(browser_of, vendor)

    choose(browser_of, "team-embed")

    wait_for(lambda: Job.objects.filter(kind=CHUNKS_REEMBED.name,
                                        status=JobStatus.FAILED).exists())
    wait_for(lambda: not Job.objects.filter(kind=CHUNKS_REEMBED.name, status__in=[
        JobStatus.PENDING, JobStatus.PROCESSING]).exists())
    embedding_switch()
    assert active_space().model == LOCAL  # type: ignore[union-attr]
    assert EmbeddingSpace.objects.get(model=PAGE_MODEL).status == SpaceStatus.BUILDING
    page = browser_of.get("/models/").content.decode()
    assert "1 document could not be re-embedded" in page
    assert "input rejected" in page
    # Once the server takes it, "Try them again" lets the switch finish.
    vendor.answer = embed
    retried = browser_of.post("/models/embedding/retry/", follow=True).content.decode()
    assert "1 document queued again." in retried
    wait_for(lambda: getattr(active_space(), "model", None) == PAGE_MODEL)
    assert "Re-embedding for <code>page:openai:team-embed</code>: 1 of 2 passages." in page


def test_the_connection_cannot_change_while_search_depends_on_it(
    browser_of: Client, alice: User, vendor: VendorServer,
) -> None:
    indexed(alice.personal_workspace, alice, "Vacation", "Employees get 25 days of vacation.")
    vendor.answer = words_embedded(width=8)
    connect(browser_of, vendor)
    choose(browser_of, "team-embed")
    embedding_switch()

    moved = connect(browser_of, vendor, base_url="http://127.0.0.1:9/v1")
    cleared = browser_of.post("/models/clear/", follow=True)
    rotated = connect(browser_of, vendor, api_key="sk-rotated-key-0123456789")

    assert moved.status_code == 422
    assert "cannot change now" in moved.content.decode()
    assert "cannot change now" in cleared.content.decode()
    assert rotated.status_code == 302  # the same server with a new key is fine
    row = ModelSetup.objects.get()
    assert (row.base_url, row.chat_model) == (f"{vendor.url}/v1", "team-model")


def test_the_environments_model_of_the_same_name_keeps_the_environments_connection(
    browser_of: Client, vendor: VendorServer, settings: Any,
) -> None:
    """A model the page reaches is named apart from the environment's of the same name:
    their vectors never mix, and the environment's is never sent to the page's server."""
    settings.AI_PROVIDER_OPTIONS = {**settings.AI_PROVIDER_OPTIONS,
                                    "openai": {"API_KEY": "sk-env", "BASE_URL": "http://env/v1"}}
    vendor.answer = words_embedded(width=1536)
    connect(browser_of, vendor)

    choose(browser_of, "text-embedding-3-small")

    assert embedding_models["default"].id == "page:openai:text-embedding-3-small"
    assert embedding_models["default"].options["BASE_URL"] == f"{vendor.url}/v1"
    environments = embedding_model_for("openai:text-embedding-3-small")
    assert environments.options["BASE_URL"] == "http://env/v1"
    assert environments.options["API_KEY"] == "sk-env"


def test_a_retired_space_is_cleared_by_one_process_a_batch_at_a_time(alice: User) -> None:
    workspace = alice.personal_workspace
    for n in range(5):
        indexed(workspace, alice, f"Note {n}", f"Note number {n} about parking and vacation.")
    old = active_space()
    assert old is not None and ChunkVector.objects.filter(space=old).count() == 5
    EmbeddingSpace.objects.filter(pk=old.pk).update(status=SpaceStatus.RETIRED,
                                                    retired_at=timezone.now())
    assert spaces_retired_clear() == 0  # it served search: kept a while

    # Another process clearing it holds its lock: this one leaves it alone.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [spaces._CLEAR_LOCK, old.pk])
        assert spaces_retired_clear(grace_seconds=0) == 0
        assert ChunkVector.objects.filter(space=old).count() == 5
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [spaces._CLEAR_LOCK, old.pk])
    finally:
        other.close()
    batches: list[str] = []
    with connection.execute_wrapper(lambda execute, sql, *args: (
            batches.append(sql) if sql.startswith("DELETE FROM retrieval_chunkvector")
            else None, execute(sql, *args))[1]):
        assert spaces_retired_clear(batch=2, grace_seconds=0) == 5

    assert len(batches) == 4  # 2 + 2 + 1, then one that finds none left
    assert not EmbeddingSpace.objects.filter(pk=old.pk).exists()
    assert f"chunkvector_hnsw_{old.pk}" not in hnsw_indexes()
    assert spaces_retired_clear(grace_seconds=0) == 0


def test_two_switches_at_once_queue_each_document_once(
    browser_of: Client, alice: User, vendor: VendorServer,
) -> None:
    for n in range(4):
        indexed(alice.personal_workspace, alice, f"Note {n}", f"Note {n} about parking.")
    vendor.answer = words_embedded(width=8)
    connect(browser_of, vendor)
    choose(browser_of, "team-embed")
    # The space and its index made, as by an earlier run; its jobs lost.
    assert embedding_switch().queued == 4
    Job.objects.filter(kind=CHUNKS_REEMBED.name).delete()
    done: list[Any] = []

    def switch() -> None:
        try:
            done.append(embedding_switch())
        finally:
            connection.close()

    threads = [threading.Thread(target=switch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(done) == 3
    assert sum(switch.queued for switch in done) == 4
    assert Job.objects.filter(kind=CHUNKS_REEMBED.name).count() == 4
    assert EmbeddingSpace.objects.filter(model=PAGE_MODEL).count() == 1


def test_a_failure_left_by_the_model_given_up_does_not_hold_the_next(
    browser_of: Client, alice: User, vendor: VendorServer,
) -> None:
    document = indexed(alice.personal_workspace, alice, "Vacation", "Employees get 25 days.")
    vendor.answer = words_embedded(width=8)
    connect(browser_of, vendor)
    choose(browser_of, "team-embed")
    assert embedding_switch().queued == 1
    choose(browser_of, "other-embed")
    # The first model's job fails after the second model's space was made.
    switched = embedding_switch()
    Job.objects.filter(kind=CHUNKS_REEMBED.name).update(status=JobStatus.FAILED,
                                                       finished_at=timezone.now())
    assert switched.dropped == [PAGE_MODEL]

    again = embedding_switch()

    assert again.queued == 1
    assert Job.objects.get(kind=CHUNKS_REEMBED.name, object_id=document.pk).status == \
        JobStatus.PENDING


def test_an_index_job_never_brings_back_a_model_no_longer_chosen(
    browser_of: Client, alice: User, vendor: VendorServer, settings: Any,
) -> None:
    """Only a switch makes another model's space: a process that has not yet seen the
    change indexes into the spaces that exist."""
    indexed(alice.personal_workspace, alice, "Vacation", "Employees get 25 days.")
    settings.AI_EMBEDDING_MODELS = {"default": {
        "BACKEND": "aistack.ai.backends.scripted.EmbeddingModel", "MODEL": "hash",
        "OPTIONS": {}}}
    embedding_models.reset()

    indexed(alice.personal_workspace, alice, "Parking", "Parking permits renew in January.")

    assert vectors_by_model() == {LOCAL: 2}
