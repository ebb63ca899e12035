"""Business actions on documents."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction

from aistack.accounts.models import Workspace
from aistack.ai.types import Attribution
from aistack.documents.models import Document, content_hash
from aistack.documents.parsing import SNIFF_BYTES, ParseError, detect_kind, parse
from aistack.documents.tasks import DOCUMENT_INDEX
from aistack.errors import Invalid, PayloadTooLarge, UnsupportedMediaType
from aistack.jobs.models import Job, JobStatus
from aistack.jobs.services import (
    JobRun,
    job_claim,
    job_enqueue,
    job_fail,
    jobs_create,
    jobs_finishing,
)
from aistack.retrieval.chunking import ChunkSpec, chunk_text
from aistack.retrieval.services import (
    IndexedDocument,
    chunks_delete,
    chunks_replace,
    embedding_input,
    embedding_space_for_configured_model,
    vectors_for,
)

_DOCUMENT_JOB_KINDS = (DOCUMENT_INDEX,)


def _validated(document: Document) -> Document:
    try:
        document.full_clean(exclude=["workspace", "author", "content_hash"])
    except ValidationError as exc:
        raise Invalid(
            "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()),
            details=exc.message_dict,
        ) from exc
    return document


@transaction.atomic
def document_create(
    *, workspace: Workspace, title: str, content: str, author: User | None
) -> Document:
    """Create a document and queue its processing."""
    document = _validated(
        Document(workspace=workspace, title=title, content=content, author=author)
    )
    document.save()
    job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk)
    return document


def document_upload_create(
    *, workspace: Workspace, file: File[bytes], content_type: str | None, author: User | None,
    title: str | None = None,
) -> Document:
    """Store an uploaded file as a new document; its text is extracted by the index job."""
    name = (file.name or "upload").rsplit("/", 1)[-1][:255]
    if file.size is not None and file.size > settings.UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(
            f"{name} is {file.size:,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,}."
        )
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    try:
        kind = detect_kind(filename=name, content_type=content_type, head=head)
    except ParseError as exc:
        raise UnsupportedMediaType(exc.message) from exc
    with transaction.atomic():
        document = _validated(Document(
            workspace=workspace, title=(title or name).strip() or name, author=author,
            content="", source_name=name, source_kind=kind, source_file=file,
        ))
        document.save()
        job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk)
    return document


@transaction.atomic
def document_update(
    *, document: Document, title: str | None = None, content: str | None = None
) -> Document:
    """Change a document; changed content is processed again."""
    old_hash, old_title = document.content_hash, document.title
    if title is not None:
        document.title = title
    if content is not None:
        document.content = content
    _validated(document)
    document.save()
    # The title is part of every chunk's embedded and searchable text.
    if document.content_hash != old_hash or document.title != old_title:
        job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk)
        document.refresh_from_db(fields=["embedding_status", "embedding_error"])
    return document


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document with its chunks and job records."""
    Job.objects.filter(
        kind__in=[kind.name for kind in _DOCUMENT_JOB_KINDS], object_id=document.pk
    ).delete()
    chunks_delete(document_ids=[document.pk])
    document.delete()


def _text_of(document: Document) -> str:
    """Return the document's text, extracting it from the uploaded file if need be."""
    if not document.awaits_parsing:
        return document.content
    with document.source_file.open("rb") as handle:
        data = handle.read()
    parsed = parse(data=data, kind=document.source_kind, max_chars=settings.DOCUMENT_MAX_CHARS)
    document.content = parsed.text
    if parsed.title and document.title == document.source_name:
        document.title = parsed.title[: settings.DOCUMENT_TITLE_MAX_CHARS]
    return parsed.text


def documents_index(*, runs: Sequence[JobRun]) -> int:
    """Parse (uploads), chunk, embed and store documents for search: their index jobs' work.

    Embedding many documents in one call keeps the model's batches full; slow work
    happens outside the transaction, and documents edited meanwhile are skipped by
    ``jobs_finishing`` (their newer job will index them). An upload's extracted text
    is saved in the same transaction as its chunks: never half-ingested.
    """
    documents = Document.objects.in_bulk([run.object_id for run in runs])
    space = embedding_space_for_configured_model()
    prepared: list[tuple[JobRun, Document, list[ChunkSpec], list[str]]] = []
    for run in runs:
        document = documents.get(run.object_id)
        if document is None:
            continue
        try:
            text = _text_of(document)
        except (ParseError, OSError) as exc:
            message = exc.message if isinstance(exc, ParseError) else "The file could not be read."
            job_fail(run=run, error=message)
            continue
        specs = chunk_text(text)
        inputs = [embedding_input(title=document.title, text=spec.text) for spec in specs]
        prepared.append((run, document, specs, inputs))
    if not prepared:
        return 0
    workspaces = {document.workspace_id for _, document, _, _ in prepared}
    only = prepared[0][1] if len(prepared) == 1 else None
    attribution = Attribution(
        feature="embedding",
        user_id=only.author_id if only else None,
        workspace_id=next(iter(workspaces)) if len(workspaces) == 1 else None,
        object_id=only.pk if only else None,
    )
    vectors = vectors_for(space=space, inputs=[text for *_, inputs in prepared for text in inputs],
                          attribution=attribution)
    items: dict[int, IndexedDocument] = {}
    offset = 0
    for _, document, specs, inputs in prepared:
        items[document.pk] = IndexedDocument(document=document, specs=specs, inputs=inputs,
                                             vectors=vectors[offset:offset + len(inputs)])
        offset += len(inputs)
    with jobs_finishing([run for run, *_ in prepared]) as owned:
        parsed = [items[run.object_id].document for run in owned
                  if items[run.object_id].document.source_file]
        for document in parsed:
            document.save(update_fields=["content", "content_hash", "title"])
        return chunks_replace(space=space, items=[items[run.object_id] for run in owned])


def document_index_run(*, run: JobRun) -> None:
    """Index one document (the index job's work)."""
    documents_index(runs=[run])


def documents_import(
    *, workspace: Workspace, items: Sequence[tuple[str, str]], author: User | None,
    deliver: bool = True,
) -> list[Document]:
    """Create many documents at once with pending index jobs.

    With ``deliver=False`` no message is sent: the caller indexes them itself
    (and if it stops early, the reconciler hands the rest to the workers).
    """
    documents = [_validated(Document(workspace=workspace, title=title, content=content,
                                     author=author)) for title, content in items]
    for document in documents:
        document.content_hash = content_hash(document.content)
    with transaction.atomic():
        created = Document.objects.bulk_create(documents, batch_size=1000)
        jobs_create(kind=DOCUMENT_INDEX, object_ids=[d.pk for d in created], deliver=deliver)
    return created


def documents_process_now(
    *, document_ids: Sequence[int], progress: Callable[[int], None], batch: int = 16,
    poll_seconds: float = 0.5,
) -> None:
    """Index pending documents in this process until every one is complete or failed.

    Workers may take some of them meanwhile: a job is claimed by one process only,
    so this finishes whether or not workers are running and never duplicates work.
    """
    remaining = set(document_ids)
    while remaining:
        runs = [run for pk in sorted(remaining)[: batch * 4]
                if (run := job_claim(kind=DOCUMENT_INDEX, object_id=pk)) is not None][:batch]
        if runs:
            documents_index(runs=runs)
        finished = set(
            Document.objects.filter(pk__in=remaining,
                                    embedding_status__in=[JobStatus.COMPLETE, JobStatus.FAILED])
            .values_list("pk", flat=True)
        )
        if finished:
            progress(len(finished))
            remaining -= finished
        elif not runs:
            time.sleep(poll_seconds)
