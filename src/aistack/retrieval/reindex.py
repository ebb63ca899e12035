"""Move search to a new embedding model without mixing vectors or pausing search."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import transaction

from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind
from aistack.jobs.runner import jobs_work_through
from aistack.jobs.services import JobRun, jobs_create, jobs_delete, jobs_finishing
from aistack.retrieval.embedding import embedding_input, vectors_for
from aistack.retrieval.index import chunk_vectors_add, chunk_vectors_missing
from aistack.retrieval.models import Chunk, EmbeddingSpace, SpaceStatus
from aistack.retrieval.spaces import embedding_space_activate, embedding_space_for_configured_model
from aistack.usage.types import Attribution

CHUNKS_REEMBED = kinds.register(
    JobKind(
        name="retrieval.reembed",
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
            for space, chunks, inputs, vectors in planned:
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


def reindex_start() -> tuple[EmbeddingSpace, list[int]]:
    """Queue re-embedding of every document lacking vectors of the configured model."""
    space = embedding_space_for_configured_model()
    if space.status == SpaceStatus.ACTIVE:
        return space, []
    document_ids = sorted(set(
        Chunk.objects.exclude(vectors__space=space).values_list("document_id", flat=True)
    ))
    with transaction.atomic():
        jobs_delete(kinds=[CHUNKS_REEMBED], object_ids=document_ids)
        jobs_create(kinds=[CHUNKS_REEMBED], object_ids=document_ids, workspace_id=None)
    return space, document_ids


def reindex_run(*, progress: Callable[[int], None],
                on_start: Callable[[EmbeddingSpace, int], None] | None = None) -> bool:
    """Re-embed everything for the configured model, then switch search to it.

    Search keeps serving the old vectors until every chunk has a new one; returns
    whether the switch happened (False if some documents failed to re-embed).
    """
    space, document_ids = reindex_start()
    if on_start is not None:
        on_start(space, len(document_ids))
    if space.status == SpaceStatus.ACTIVE:
        return True
    jobs_work_through(kind=CHUNKS_REEMBED, object_ids=document_ids,
                      work=lambda runs: documents_reembed_prepare(runs=runs),
                      progress=progress)
    if Chunk.objects.exclude(vectors__space=space).exists():
        return False
    embedding_space_activate(space=space)
    return True
