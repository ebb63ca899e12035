"""Move search to a new embedding model without mixing vectors or pausing search.

Two ways in. ``aistack reindex`` re-embeds in the foreground, for AI_EMBEDDING_MODEL.
Once the Models page has chosen the embedding model, workers do it by themselves:
``embedding_switch`` runs when the choice is saved, after the last re-embedding job, and
every 30 s from the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from celery import current_app
from django.db import connection, transaction

from aistack.ai.setup import page_models_fresh
from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind
from aistack.jobs.runner import jobs_work_through
from aistack.jobs.selectors import jobs_failed_ids, jobs_held, jobs_open_exist
from aistack.jobs.services import JobRun, jobs_create, jobs_delete, jobs_finishing
from aistack.redis.connections import redis_outage_active
from aistack.retrieval.embedding import embedding_input, vectors_for
from aistack.retrieval.index import chunk_vectors_add, chunk_vectors_missing
from aistack.retrieval.models import Chunk, EmbeddingSpace, SpaceStatus
from aistack.retrieval.selectors import REEMBED_KIND
from aistack.retrieval.spaces import (
    embedding_space_activate,
    embedding_space_for_configured_model,
    embedding_space_index_due,
    embedding_space_index_ready,
    spaces_building_retire,
    spaces_retired_clear,
    spaces_still_building,
)
from aistack.transactions import after_commit
from aistack.usage.types import Attribution

logger = logging.getLogger(__name__)

SWITCH_TASK = "aistack.retrieval.tasks.embedding_switch"

CHUNKS_REEMBED = kinds.register(
    JobKind(
        name=REEMBED_KIND,
        task_name="aistack.retrieval.tasks.chunks_reembed",
        model_label="documents.Document",
        # Re-embedding for a new model is upkeep: the document's status stays as it is.
        status_field=None,
        error_field=None,
    )
)


def documents_reembed(*, runs: Sequence[JobRun]) -> int:
    """Give the documents' chunks vectors in every space being built (the jobs' work)."""
    return documents_reembed_prepare(runs=runs)()


def documents_reembed_prepare(*, runs: Sequence[JobRun]) -> Callable[[], int]:
    """Embed what ``documents_reembed`` needs; return what stores it (maybe elsewhere)."""
    document_ids = [run.object_id for run in runs]
    attribution = Attribution(feature="reindex")

    planned = []
    for space in EmbeddingSpace.objects.filter(status=SpaceStatus.BUILDING):
        chunks = chunk_vectors_missing(space=space, document_ids=document_ids)
        inputs = [embedding_input(title=c.document.title, text=c.text) for c in chunks]
        vectors = vectors_for(space=space, inputs=inputs, attribution=attribution)
        planned.append((space, chunks, inputs, vectors))

    def store() -> int:
        added = 0
        with jobs_finishing(runs):
            # Held until commit: a switch retiring one of them waits for these vectors.
            building = spaces_still_building([space.pk for space, *_ in planned])
            for space, chunks, inputs, vectors in planned:
                if space.pk not in building:
                    continue  # retired meanwhile: another model was chosen
                # Chunks replaced by an edit meanwhile are gone; their successors got
                # vectors in every space from the index job.
                # Locked, so an edit deleting them now waits for us (or we see them gone).
                alive = set(Chunk.objects.select_for_update()
                            .filter(pk__in=[c.pk for c in chunks]).values_list("pk", flat=True))
                keep = [i for i, chunk in enumerate(chunks) if chunk.pk in alive]
                added += chunk_vectors_add(space=space, chunks=[chunks[i] for i in keep],
                                           inputs=[inputs[i] for i in keep],
                                           vectors=[vectors[i] for i in keep])
        return added

    return store


# Every decision about which space is built or active takes this lock (transaction-level):
# two switches, or a switch and ``aistack reindex``, take turns.
_SWITCH_LOCK = 7_310_003


def _switch_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SWITCH_LOCK])


def _target() -> tuple[EmbeddingSpace, list[str]]:
    """Return the configured model's space (made if need be), having retired any other
    being built; read under the lock from the setup as it is now."""
    with transaction.atomic():
        _switch_lock()
        page_models_fresh()
        target = embedding_space_for_configured_model()
        return target, spaces_building_retire(keep=target)


def reindex_start() -> tuple[EmbeddingSpace, list[int]]:
    """Queue re-embedding of every document lacking vectors of the configured model."""
    space, _ = _target()
    if space.status == SpaceStatus.ACTIVE:
        return space, []
    with transaction.atomic():
        _switch_lock()
        document_ids = _documents_lacking(space)
        jobs_delete(kinds=[CHUNKS_REEMBED], object_ids=document_ids)
        jobs_create(kinds=[CHUNKS_REEMBED], object_ids=document_ids, workspace_id=None)
    return space, document_ids


def _documents_lacking(space: EmbeddingSpace) -> list[int]:
    return sorted(set(Chunk.objects.exclude(vectors__space=space)
                      .values_list("document_id", flat=True)))


def reindex_run(*, progress: Callable[[int], None],
                on_start: Callable[[EmbeddingSpace, int], None] | None = None) -> bool:
    """Re-embed everything for the configured model, then switch search to it.

    Search keeps serving the old vectors until every chunk has a new one; returns
    whether the switch happened (False if some documents failed to re-embed). The old
    vectors are deleted later (``spaces.spaces_retired_clear``, from the scheduler).
    """
    space, document_ids = reindex_start()
    if on_start is not None:
        on_start(space, len(document_ids))
    if space.status == SpaceStatus.ACTIVE:
        return True
    jobs_work_through(kind=CHUNKS_REEMBED, object_ids=document_ids,
                      work=lambda runs: documents_reembed_prepare(runs=runs),
                      progress=progress)
    while True:
        # Filled first and indexed once, in bulk: a fraction of inserting into the graph
        # vector by vector (search reads the old space meanwhile).
        if not _documents_lacking(space) and embedding_space_index_due(space):
            embedding_space_index_ready(space, wait=True)
        with transaction.atomic():
            _switch_lock()
            status = EmbeddingSpace.objects.filter(pk=space.pk).values_list(
                "status", flat=True).first()
            if status == SpaceStatus.ACTIVE:
                return True  # a worker's switch got there first
            if status != SpaceStatus.BUILDING or _documents_lacking(space):
                return False
            if not _index_still_due(space):
                embedding_space_activate(space=space)
                return True
        # Documents indexed meanwhile made it due: built outside the lock, then switched.


@dataclass(frozen=True, kw_only=True)
class Switch:
    """What one ``embedding_switch`` did."""

    model: str = ""
    # Documents handed to workers to re-embed now.
    queued: int = 0
    # Models whose half-built vectors were dropped: another model was chosen since.
    dropped: list[str] = field(default_factory=list)
    switched: bool = False
    vectors_deleted: int = 0


def embedding_switch() -> Switch:
    """Bring search to the embedding model the Models page chose, without waiting on it.

    Makes the model's space, drops any other being built, hands the documents still
    lacking its vectors to the workers (not those waiting, running, or failed since they
    were queued for it: a failure holds the switch until it is retried, from the page or
    by ``aistack reindex``), and switches search over once no chunk lacks a vector and
    the space has its index (built then, concurrently, if it has outgrown exact scans).
    Then clears retired spaces. Until the page has chosen an embedding model it only
    clears: AI_EMBEDDING_MODEL alone is switched to by ``aistack reindex``.
    """
    page = page_models_fresh()
    if page is None or not page.embedding_chosen:
        return Switch(vectors_deleted=spaces_retired_clear())
    target, dropped = _target()
    done = Switch(model=target.model, dropped=dropped)
    # Another process may be building the index: the next run goes on then.
    if target.status == SpaceStatus.BUILDING and _indexed_once_filled(target):
        with transaction.atomic():
            _switch_lock()
            if spaces_still_building([target.pk]):
                done = _switch_step(target, done)
    if done.dropped or done.switched:
        logger.info("embedding switch", extra={"model": done.model, "dropped": done.dropped,
                                               "switched": done.switched})
    return Switch(model=done.model, queued=done.queued, dropped=done.dropped,
                  switched=done.switched, vectors_deleted=spaces_retired_clear())


def _indexed_once_filled(space: EmbeddingSpace) -> bool:
    """Return whether the switch may go on: the space still lacks vectors (to be queued),
    or it is filled and has the index it needs (built here unless another process is)."""
    if _documents_lacking(space) or not embedding_space_index_due(space):
        return True
    return embedding_space_index_ready(space)


def _index_still_due(space: EmbeddingSpace) -> bool:
    """Return whether the space needs an index it has not got, as it is now."""
    return embedding_space_index_due(EmbeddingSpace.objects.get(pk=space.pk))


def _switch_step(target: EmbeddingSpace, done: Switch) -> Switch:
    missing = _documents_lacking(target)
    if not missing:
        if _index_still_due(target):
            return done  # the next run builds it, outside this lock, then switches
        embedding_space_activate(space=target)
        return Switch(model=done.model, dropped=done.dropped, switched=True)
    held = jobs_held(kind=CHUNKS_REEMBED, object_ids=missing, since=target.created_at)
    todo = [document_id for document_id in missing if document_id not in held]
    jobs_delete(kinds=[CHUNKS_REEMBED], object_ids=todo)
    jobs_create(kinds=[CHUNKS_REEMBED], object_ids=todo, workspace_id=None)
    return Switch(model=done.model, dropped=done.dropped, queued=len(todo))


def embedding_switch_after_job() -> None:
    """After a re-embedding job: the last one switches search over."""
    if not jobs_open_exist(kind=CHUNKS_REEMBED):
        embedding_switch()


def reembed_failures_retry() -> int:
    """Forget the re-embedding jobs that failed, so that the next switch queues their
    documents again, and ask for it; return how many."""
    failed = jobs_failed_ids(kind=CHUNKS_REEMBED)
    jobs_delete(kinds=[CHUNKS_REEMBED], object_ids=failed)
    embedding_switch_soon()
    return len(failed)


def embedding_switch_soon() -> None:
    """Ask a worker to run ``embedding_switch`` once the current transaction commits.

    A message lost to Redis costs 30 s: the scheduler runs it then anyway.
    """
    after_commit(_switch_send)


def _switch_send() -> None:
    if redis_outage_active():
        return  # the scheduler's run will do
    current_app.send_task(SWITCH_TASK)
