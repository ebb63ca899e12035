"""Indexing a document for search: parse (uploads), chunk, embed, store.

A document's index job does it all in one go; a document too large for one job
fans out into part jobs that embed its pieces in parallel and wake the index job
once all of them have settled, which then stores every chunk in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import transaction

from aistack.documents.models import Document
from aistack.documents.parsing import ParseError, parse, title_from_name
from aistack.documents.summaries import DOCUMENT_SUMMARY
from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.runner import jobs_work_through
from aistack.jobs.selectors import job_outcomes, jobs_open_exist, jobs_settled
from aistack.jobs.services import (
    JobRun,
    job_enqueue,
    job_fail,
    job_lock,
    job_park,
    job_wake,
    jobs_create,
    jobs_delete,
    jobs_finishing,
)
from aistack.retrieval.chunking import ChunkSpec, chunk_texts
from aistack.retrieval.embedding import embedding_input, vectors_for
from aistack.retrieval.index import IndexedDocument, chunks_replace, vectors_stage
from aistack.retrieval.models import IndexPart
from aistack.retrieval.postings import posting_lists_merge_all
from aistack.retrieval.spaces import (
    active_space_index_due,
    embedding_space_index_ready,
    spaces_to_fill,
    spaces_unchanged,
)
from aistack.usage.types import Attribution

DOCUMENT_INDEX = kinds.register(
    JobKind(
        name="documents.index",
        task_name="aistack.documents.tasks.document_index",
        model_label="documents.Document",
        status_field="embedding_status",
        error_field="embedding_error",
        title_field="title",
    )
)
# Large batches: the model sorts each call's texts by length, so bigger calls pad less
# and embed faster.
INGEST_BATCH = 256


def _text_of(document: Document) -> str:
    """Return the document's text, extracting it from the uploaded file if need be."""
    if not document.awaits_parsing:
        return document.content
    with document.source_file.open("rb") as handle:
        data = handle.read()
    parsed = parse(data=data, kind=document.source_kind, max_chars=settings.DOCUMENT_MAX_CHARS)
    document.content = parsed.text
    # Still the title its file name gave it: no one chose one.
    if parsed.title and document.title == title_from_name(document.source_name):
        document.title = parsed.title[: settings.DOCUMENT_TITLE_MAX_CHARS]
    return parsed.text


def _index_parts_delete(document_ids: Sequence[int]) -> None:
    part_ids = list(IndexPart.objects.filter(document_id__in=document_ids)
                    .values_list("pk", flat=True))
    if part_ids:
        jobs_delete(kinds=[DOCUMENT_INDEX_PART], object_ids=part_ids)
        IndexPart.objects.filter(pk__in=part_ids).delete()


def _parts_plan(run: JobRun, document: Document, inputs: Sequence[str]) -> None:
    size = settings.INDEX_PART_INPUTS
    with transaction.atomic():
        _index_parts_delete([document.pk])  # planned for an older version
        created = IndexPart.objects.bulk_create(
            IndexPart(document=document, generation=run.generation, ordinal=n,
                      inputs=list(inputs[start:start + size]))
            for n, start in enumerate(range(0, len(inputs), size))
        )
        jobs_create(kinds=[DOCUMENT_INDEX_PART], object_ids=[part.pk for part in created],
                    workspace_id=document.workspace_id)
        job_park(run=run, seconds=settings.INDEX_PARTS_WAIT_SECONDS)


def _waits_for_parts(run: JobRun, document: Document, inputs: Sequence[str]) -> bool:
    """Fan a large document out into part jobs; True while (or if) they have not all succeeded.

    The first run plans the parts and parks; the last part to finish wakes the job,
    whose next run finds every vector staged and stores the chunks in one go.
    """
    parts = list(IndexPart.objects.filter(document=document, generation=run.generation)
                 .values_list("pk", flat=True))
    jobs = job_outcomes(kind=DOCUMENT_INDEX_PART, object_ids=parts)
    if not parts or len(jobs) < len(parts):
        _parts_plan(run, document, inputs)
        return True
    failed = [error for status, error in jobs if status == JobStatus.FAILED]
    if failed:
        with transaction.atomic():
            job_fail(run=run, error=f"Embedding part of the document failed: {failed[0]}")
            _index_parts_delete([document.pk])
        return True
    if any(status != JobStatus.COMPLETE for status, _ in jobs):
        # Woken by the reconciler's safety net before the parts were done.
        job_park(run=run, seconds=settings.INDEX_PARTS_WAIT_SECONDS)
        return True
    return False


def documents_index(*, runs: Sequence[JobRun], fan_out: bool = False) -> int:
    """Parse (uploads), chunk, embed and store documents for search: their index jobs' work.

    Embedding many documents in one call keeps the model's batches full; slow work
    happens outside the transaction, and documents edited meanwhile are skipped by
    ``jobs_finishing`` (their newer job will index them). An upload's extracted text
    is saved in the same transaction as its chunks: never half-ingested. With
    ``fan_out``, a document too large for one job is embedded by part jobs first.
    """
    embed = documents_index_read(runs=runs, fan_out=fan_out)
    store = embed() if embed is not None else None
    return store() if store is not None else 0


Store = Callable[[], int]


def documents_index_read(*, runs: Sequence[JobRun],
                         fan_out: bool = False) -> Callable[[], Store] | None:
    """Do ``documents_index``'s work up to the model (read, parse and chunk); return what
    embeds the chunks and returns what stores them, if there is anything to do.

    Each of the three steps may run in a thread of its own: one batch read while the
    one before is embedded and the one before that stored.
    """
    documents = Document.objects.in_bulk([run.object_id for run in runs])
    spaces = spaces_to_fill()
    readable: list[tuple[JobRun, Document, str]] = []
    for run in runs:
        document = documents.get(run.object_id)
        if document is None:
            continue
        try:
            readable.append((run, document, _text_of(document)))
        except (ParseError, OSError) as exc:
            message = exc.message if isinstance(exc, ParseError) else "The file could not be read."
            # In one commit, so that a page told of the failure finds the summary's too.
            with transaction.atomic():
                # With no text there is nothing to summarize either: say why, don't wait.
                if job_fail(run=run, error=message):
                    Document.objects.filter(pk=document.pk).update(
                        summary_status=JobStatus.FAILED, summary_error=message)
    chunked = chunk_texts([text for *_, text in readable])
    prepared: list[tuple[JobRun, Document, list[ChunkSpec], list[str]]] = []
    for (run, document, _), specs in zip(readable, chunked, strict=True):
        inputs = [embedding_input(title=document.title, text=spec.text) for spec in specs]
        if (fan_out and len(inputs) > settings.INDEX_PART_INPUTS
                and _waits_for_parts(run, document, inputs)):
            continue
        prepared.append((run, document, specs, inputs))
    if not prepared:
        return None
    workspaces = {document.workspace_id for _, document, _, _ in prepared}
    only = prepared[0][1] if len(prepared) == 1 else None
    attribution = Attribution(
        feature="embedding",
        user_id=only.author_id if only else None,
        workspace_id=next(iter(workspaces)) if len(workspaces) == 1 else None,
        object_id=only.pk if only else None,
    )

    def embed() -> Store:
        all_inputs = [text for *_, inputs in prepared for text in inputs]
        # The runner renews the runs' leases while the model works (``lease_kept``).
        vectors = {space: vectors_for(space=space, inputs=all_inputs, attribution=attribution)
                   for space in spaces}
        items: dict[int, IndexedDocument] = {}
        offset = 0
        for _, document, specs, inputs in prepared:
            items[document.pk] = IndexedDocument(
                document_id=document.pk, workspace_id=document.workspace_id, specs=specs,
                inputs=inputs,
                vectors={space: space_vectors[offset:offset + len(inputs)]
                         for space, space_vectors in vectors.items()},
            )
            offset += len(inputs)

        def store() -> int:
            with jobs_finishing([run for run, *_ in prepared]) as owned:
                spaces_unchanged(spaces)
                parsed = [documents[run.object_id] for run in owned
                          if documents[run.object_id].source_file]
                for document in parsed:
                    document.save(update_fields=["content", "content_hash", "title"])
                    # An upload has text to summarize only now.
                    job_enqueue(kind=DOCUMENT_SUMMARY, object_id=document.pk,
                                workspace_id=document.workspace_id)
                stored = chunks_replace(items=[items[run.object_id] for run in owned])
                _index_parts_delete([run.object_id for run in owned])
                return stored

        return store

    return embed


def document_index_run(*, run: JobRun) -> None:
    """Index one document (the index job's work), in parts if it is large."""
    documents_index(runs=[run], fan_out=True)


def index_part_run(*, run: JobRun) -> None:
    """Embed one part of a large document and stage its vectors (the part job's work)."""
    part = IndexPart.objects.select_related("document").filter(pk=run.object_id).first()
    if part is None:  # its document was deleted or edited: nothing left to do
        with run.finishing():
            return
    document = part.document
    attribution = Attribution(feature="embedding", user_id=document.author_id,
                              workspace_id=document.workspace_id, object_id=document.pk)
    vectors = {space: vectors_for(space=space, inputs=part.inputs, attribution=attribution)
               for space in spaces_to_fill()}
    with run.finishing():
        if IndexPart.objects.filter(pk=part.pk).exists():
            vectors_stage(part=part, vectors=vectors)


def index_parts_settled(*, part_ids: Sequence[int]) -> None:
    """Wake a document's index job once all of its parts have completed or failed."""
    planned = set(IndexPart.objects.filter(pk__in=part_ids)
                  .values_list("document_id", "generation"))
    for document_id, generation in planned:
        # Locked: parts settling at the same moment take turns here, so the last one
        # sees the others settled and exactly one wakes the job.
        job_lock(kind=DOCUMENT_INDEX, object_id=document_id)
        siblings = IndexPart.objects.filter(document_id=document_id, generation=generation)
        if jobs_settled(kind=DOCUMENT_INDEX_PART, object_ids=siblings.values("pk")):
            job_wake(kind=DOCUMENT_INDEX, object_id=document_id, generation=generation)


def _index_parts_settled(part_ids: list[int]) -> None:
    index_parts_settled(part_ids=part_ids)


DOCUMENT_INDEX_PART = kinds.register(
    JobKind(
        name="documents.index_part",
        task_name="aistack.documents.tasks.document_index_part",
        model_label="retrieval.IndexPart",
        # The document's embedding_status shows its index job, which waits for its parts.
        status_field=None,
        error_field=None,
        on_settled=_index_parts_settled,
    )
)


# While a load is under way (this many documents or more waiting to be indexed: an
# import, not a site's trickle of edits), the scheduler leaves a due vector index to the
# load's end (``documents_process_now`` builds it then, in one go) until the space holds
# VECTOR_INDEX_WAIT_MAX_VECTORS: exact scans of them take tens of milliseconds by then.
LOADING_DOCUMENTS = 20
VECTOR_INDEX_WAIT_MAX_VECTORS = 50_000


def vector_index_build_when_idle() -> bool:
    """Build the active space's vector index if it is due (the scheduler's check): at
    once unless a load is under way, else only once the space has grown past
    VECTOR_INDEX_WAIT_MAX_VECTORS; return whether one was built here."""
    loading = jobs_open_exist(kind=DOCUMENT_INDEX, at_least=LOADING_DOCUMENTS)
    space = active_space_index_due(beyond=VECTOR_INDEX_WAIT_MAX_VECTORS if loading else None)
    return space is not None and embedding_space_index_ready(space)


def documents_process_now(
    *, document_ids: Sequence[int], progress: Callable[[int], None],
    index_building: Callable[[], object] | None = None,
) -> None:
    """Index the documents in this process (workers may help) until all are done, then
    merge their postings into the text index, as a bulk load leaves many, and build the
    vector index if the load made it due (in bulk, once, rather than vector by vector),
    calling ``index_building`` first. While one batch is embedded, the next is read and
    chunked and the one before stored."""
    jobs_work_through(kind=DOCUMENT_INDEX, object_ids=document_ids,
                      work=lambda runs: documents_index_read(runs=runs), progress=progress,
                      batch=INGEST_BATCH, ahead=True)
    posting_lists_merge_all(workspace_ids=list(
        Document.objects.filter(pk__in=document_ids).values_list("workspace_id", flat=True)
        .distinct()))
    space = active_space_index_due()
    if space is not None:
        if index_building is not None:
            index_building()
        embedding_space_index_ready(space)
