"""Business actions on documents."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction

from aistack.accounts.models import Workspace
from aistack.documents.models import Document
from aistack.documents.tasks import DOCUMENT_INDEX
from aistack.errors import Invalid
from aistack.jobs.models import Job
from aistack.jobs.services import JobRun, job_enqueue
from aistack.retrieval.chunking import chunk_text
from aistack.retrieval.services import chunks_replace

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


@transaction.atomic
def document_update(
    *, document: Document, title: str | None = None, content: str | None = None
) -> Document:
    """Change a document; changed content is processed again."""
    old_hash = document.content_hash
    if title is not None:
        document.title = title
    if content is not None:
        document.content = content
    _validated(document)
    document.save()
    if document.content_hash != old_hash:
        job_enqueue(kind=DOCUMENT_INDEX, object_id=document.pk)
        document.refresh_from_db(fields=["embedding_status", "embedding_error"])
    return document


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document with its chunks and job records."""
    Job.objects.filter(
        kind__in=[kind.name for kind in _DOCUMENT_JOB_KINDS], object_id=document.pk
    ).delete()
    document.delete()


def document_index_run(*, run: JobRun) -> None:
    """Split the document into chunks and store them (the job's work)."""
    document = Document.objects.filter(pk=run.object_id).first()
    if document is None:
        return
    specs = chunk_text(document.content)
    with run.finishing():
        # Re-read under the job lock: an edit since we read bumps the generation,
        # and finishing() would already have refused.
        chunks_replace(document=document, specs=specs)
