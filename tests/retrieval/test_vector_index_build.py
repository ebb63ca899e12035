"""A space's HNSW index is built once the space outgrows exact scans, in bulk: by a bulk
ingest that made it due, by the scheduler's task, and by a switch before it serves."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection, transaction

from aistack.accounts.models import Workspace
from aistack.documents import indexing
from aistack.documents.indexing import DOCUMENT_INDEX, documents_process_now
from aistack.documents.models import Document
from aistack.documents.services import document_create, documents_import
from aistack.documents.tasks import build_vector_index
from aistack.jobs.selectors import jobs_open_exist
from aistack.jobs.services import job_claim
from aistack.retrieval import selectors, spaces
from aistack.retrieval.models import EmbeddingSpace, SpaceStatus
from aistack.retrieval.reindex import (
    CHUNKS_REEMBED,
    Switch,
    _indexed_once_filled,
    _switch_lock,
    _switch_step,
    documents_reembed,
    reindex_run,
    reindex_start,
)
from aistack.retrieval.selectors import SearchMode, active_space
from aistack.retrieval.services import search
from aistack.usage.types import Attribution
from tests.retrieval.helpers import indexed

NOTES = [("Vacation", "Employees get 25 days of paid vacation every year."),
         ("Parking", "Parking permits renew every January at the front desk."),
         ("Kitchen", "The office kitchen is cleaned every evening."),
         ("Laptops", "Laptops are replaced every three years by IT."),
         ("Travel", "Book flights through the travel desk two weeks ahead.")]


@pytest.fixture
def at_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """As at scale, with a few vectors standing for thousands."""
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 3)
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_VECTORS", 3)


def index_state(space_id: int) -> bool | None:
    """Whether the space's index is valid; None when it has none."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT i.indisvalid FROM pg_class c JOIN pg_index i "
                       "ON i.indexrelid = c.oid WHERE c.relname = %s",
                       [f"chunkvector_hnsw_{space_id}"])
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def ingested(workspace: Workspace, notes: list[tuple[str, str]], said: list[str]
             ) -> list[int]:
    """Import and index documents as ``aistack ingest`` does; ``said``: what the command
    line is told."""
    created = documents_import(workspace=workspace, items=notes, author=None,
                               deliver=False, summarize=False)
    documents_process_now(document_ids=[d.pk for d in created], progress=lambda n: None,
                          index_building=lambda: said.append("building"))
    return [d.pk for d in created]


def nearest(workspace: Workspace, query: str) -> list[int]:
    return [hit.document_id for hit in search(
        workspace_ids=[workspace.pk], query=query, k=3, mode=SearchMode.VECTOR,
        attribution=Attribution(feature="search"), snippets=False)]


@pytest.mark.django_db(transaction=True)
def test_a_space_is_scanned_until_an_ingest_makes_it_outgrow_exact_scans_then_indexed(
        alice: User, at_scale: None) -> None:
    workspace = alice.personal_workspace
    said: list[str] = []
    vacation, parking = ingested(workspace, NOTES[:2], said)
    assert said == []
    space = active_space()
    assert space is not None and not space.indexed
    assert index_state(space.pk) is None
    # Scanned exactly, though the workspace holds all of the space: there is no index.
    assert selectors._vector_plan(space, [workspace.pk], 10)[0] is True
    assert nearest(workspace, "holidays off work")[0] == vacation

    ingested(workspace, NOTES[2:], said)

    assert said == ["building"]  # the command line shows it
    # The ingest that made the space due built its index, and search's cached space says so.
    space = active_space()
    assert space is not None and space.indexed
    assert index_state(space.pk) is True
    cache.clear()  # the space's size, as search keeps it for a minute
    assert selectors._vector_plan(space, [workspace.pk], 10)[0] is False
    assert nearest(workspace, "holidays off work")[0] == vacation
    assert nearest(workspace, "where do I renew my car permit")[0] == parking
    # Nothing more to do for it.
    assert build_vector_index() is False


def test_the_schedulers_task_indexes_the_active_space_once_jobs_filled_it_past_exact_scans(
        alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 3)
    workspace = alice.personal_workspace
    for title, text in NOTES[:3]:
        indexed(workspace, alice, title, text)  # each by its own job, as workers do
    space = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    assert build_vector_index() is False  # 3 vectors: not more than exact scans serve
    assert index_state(space.pk) is None

    indexed(workspace, alice, *NOTES[3])  # due now, but...
    # ...documents are waiting to be indexed (a load under way; two stand for twenty):
    # the index is left to the load's end,
    monkeypatch.setattr(indexing, "LOADING_DOCUMENTS", 2)
    waiting = [document_create(workspace=workspace, title=title, content=text, author=alice)
               for title, text in [NOTES[4], ("Desks", "Desks are booked a day ahead.")]]
    assert jobs_open_exist(kind=DOCUMENT_INDEX, at_least=2)
    assert not jobs_open_exist(kind=DOCUMENT_INDEX, at_least=3)
    assert build_vector_index() is False
    assert index_state(space.pk) is None
    # unless the space has grown past what a load may leave unindexed.
    monkeypatch.setattr(indexing, "VECTOR_INDEX_WAIT_MAX_VECTORS", 4)
    assert build_vector_index() is False
    indexed(workspace, alice, "Chairs", "Chairs are adjusted by facilities.")
    assert all(Document.objects.get(pk=d.pk).embedding_status != "complete" for d in waiting)
    assert build_vector_index() is True
    assert EmbeddingSpace.objects.get(pk=space.pk).indexed
    assert index_state(space.pk) is True
    assert build_vector_index() is False


@pytest.mark.django_db(transaction=True)
def test_a_build_under_way_elsewhere_is_left_to_finish_and_recorded_by_the_next_run(
        alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 3)
    workspace = alice.personal_workspace
    for title, text in NOTES[:4]:
        indexed(workspace, alice, title, text)
    space = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    taken, release = threading.Event(), threading.Event()

    def another_builder() -> None:
        with spaces._space_lock(spaces._INDEX_LOCK, space.pk, wait=True):
            taken.set()
            release.wait(30)
        connection.close()

    builder = threading.Thread(target=another_builder)
    builder.start()
    try:
        assert taken.wait(30)
        # The task does not wait for the other process's build, nor claims it done.
        assert build_vector_index() is False
        assert not EmbeddingSpace.objects.get(pk=space.pk).indexed
        assert index_state(space.pk) is None
    finally:
        release.set()
        builder.join(30)
    assert build_vector_index() is True
    assert index_state(space.pk) is True
    assert active_space().indexed  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
def test_an_index_left_invalid_by_a_stopped_build_is_built_again(
        alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 3)
    for title, text in NOTES[:4]:
        indexed(alice.personal_workspace, alice, title, text)
    space = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    spaces.embedding_space_index_create(space=space, concurrently=True)
    with connection.cursor() as cursor:  # what a build stopped half-way leaves
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
                       [f"chunkvector_hnsw_{space.pk}"])
    assert index_state(space.pk) is False

    assert build_vector_index() is True

    assert index_state(space.pk) is True
    assert EmbeddingSpace.objects.get(pk=space.pk).indexed


@pytest.mark.django_db(transaction=True)
def test_an_index_dropped_by_hand_is_noticed_searched_without_and_built_again(
        alice: User, at_scale: None, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = alice.personal_workspace
    documents = {title: indexed(workspace, alice, title, text).pk for title, text in NOTES}
    assert build_vector_index() is True
    space = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX chunkvector_hnsw_{space.pk}")
    assert space.indexed and index_state(space.pk) is None

    # The scheduler's next run sees it gone (a build elsewhere holds it up here); until
    # it is built, search scans the vectors exactly.
    with monkeypatch.context() as held:
        held.setattr(indexing, "embedding_space_index_ready", lambda space: False)
        assert build_vector_index() is False
    found = active_space()
    assert found is not None and not found.indexed
    cache.clear()
    assert selectors._vector_plan(found, [workspace.pk], 3)[0] is True
    assert nearest(workspace, "paid vacation days")[0] == documents["Vacation"]

    assert build_vector_index() is True

    assert index_state(space.pk) is True
    assert EmbeddingSpace.objects.get(pk=space.pk).indexed


def test_a_reindex_fills_the_new_space_first_and_indexes_it_once_before_it_serves(
        alice: User, monkeypatch: pytest.MonkeyPatch, use_models: Callable[..., None]) -> None:
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 2)
    workspace = alice.personal_workspace
    for title, text in NOTES[:3]:
        indexed(workspace, alice, title, text)
    use_models(embedding="scripted:hash")
    index_while_filling: list[bool | None] = []

    def progress(done: int) -> None:
        building = EmbeddingSpace.objects.get(status=SpaceStatus.BUILDING)
        index_while_filling.append(index_state(building.pk))

    assert reindex_run(progress=progress) is True

    assert index_while_filling and set(index_while_filling) == {None}
    new = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    assert new.model == "scripted:hash"
    assert new.indexed and index_state(new.pk) is True


def test_a_switch_never_serves_a_space_that_needs_an_index_it_has_not_got(
        alice: User, monkeypatch: pytest.MonkeyPatch, use_models: Callable[..., None]) -> None:
    monkeypatch.setattr(spaces, "INDEX_AFTER_VECTORS", 2)
    for title, text in NOTES[:3]:
        indexed(alice.personal_workspace, alice, title, text)
    use_models(embedding="scripted:hash")
    target, document_ids = reindex_start()
    # The last re-embedding jobs finish after a switch found vectors still missing, and
    # so built nothing: the next step, under the lock, finds the space full but unindexed.
    for document_id in document_ids:
        run = job_claim(kind=CHUNKS_REEMBED, object_id=document_id)
        assert run is not None
        documents_reembed(runs=[run])
    with transaction.atomic():
        _switch_lock()
        done = _switch_step(target, Switch(model=target.model))
    assert not done.switched
    assert EmbeddingSpace.objects.get(pk=target.pk).status == SpaceStatus.BUILDING

    # The next run builds it first, then switches.
    assert _indexed_once_filled(target)
    with transaction.atomic():
        _switch_lock()
        done = _switch_step(target, Switch(model=target.model))
    assert done.switched
    new = EmbeddingSpace.objects.get(pk=target.pk)
    assert new.status == SpaceStatus.ACTIVE and new.indexed
    assert index_state(new.pk) is True
