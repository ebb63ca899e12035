"""Business actions on documents."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction

from aistack.accounts.models import Workspace
from aistack.cache import content_hash
from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.models import Document
from aistack.documents.parsing import SNIFF_BYTES, ParseError, detect_kind, title_from_name
from aistack.documents.summaries import DOCUMENT_SUMMARY
from aistack.errors import Invalid, PayloadTooLarge, UnsupportedMediaType
from aistack.jobs.services import (
    job_enqueue,
    jobs_create,
)
from aistack.validation import without_controls


def _validated(document: Document) -> Document:
    # Whatever the way in (API, web form, admin, MCP, import): control characters but tab
    # and line breaks carry no text, and search's snippets mark matches with two of them.
    document.title = without_controls(document.title)
    document.content = without_controls(document.content)
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
    # A new document has no jobs yet and its statuses already read "pending": plain
    # inserts do, which keeps the request fast. It is summarized before anyone asks, so
    # the first reader gets a cache hit.
    jobs_create(kinds=[DOCUMENT_INDEX, DOCUMENT_SUMMARY], object_ids=[document.pk],
                workspace_id=workspace.pk)
    return document


def document_upload_create(
    *, workspace: Workspace, file: File[bytes], content_type: str | None, author: User | None,
    title: str | None = None,
) -> Document:
    """Store an uploaded file as a new document; its text is extracted by the index job.

    Without a ``title`` it is titled after the file's name until its text is read, when
    its own heading or title takes over (see ``parsing``).
    """
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
            workspace=workspace, title=(title or "").strip() or title_from_name(name),
            author=author,
            content="", source_name=name, source_kind=kind, source_file=file,
        ))
        document.save()
        jobs_create(kinds=[DOCUMENT_INDEX], object_ids=[document.pk], workspace_id=workspace.pk)
    return document


@transaction.atomic
def document_update(
    *, document: Document, title: str | None = None, content: str | None = None
) -> Document:
    """Change a document; changed text is processed again."""
    # Re-read under a row lock and write back only what is edited: workers write the
    # status, summary and parsed-text columns of this row concurrently.
    current = Document.objects.select_for_update().get(pk=document.pk)
    old_hash, old_title = current.content_hash, current.title
    if title is not None:
        current.title = title
    if content is not None:
        current.content = content
    _validated(current)
    current.save(update_fields=["title", "content", "content_hash", "updated_at"])
    # The title is part of every chunk's embedded and searchable text.
    if current.content_hash != old_hash or current.title != old_title:
        job_enqueue(kind=DOCUMENT_INDEX, object_id=current.pk,
                    workspace_id=current.workspace_id)
        current.refresh_from_db(fields=["embedding_status", "embedding_error"])
    if current.content_hash != old_hash:
        job_enqueue(kind=DOCUMENT_SUMMARY, object_id=current.pk,
                    workspace_id=current.workspace_id)
        current.refresh_from_db(fields=["summary_status", "summary_error"])
    return current


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document; its chunks, statistics and jobs go with it (see signals)."""
    document.delete()


def documents_import(
    *, workspace: Workspace, items: Sequence[tuple[str, str]], author: User | None,
    deliver: bool = True, summarize: bool = True,
) -> list[Document]:
    """Create many documents at once with pending index (and summary) jobs.

    With ``deliver=False`` no index message is sent: the caller indexes them itself
    (and if it stops early, the reconciler hands the rest to the workers). Summaries
    are left to the workers; ``summarize=False`` skips them (a scratch evaluation
    corpus needs none, and a hosted model would charge for each).
    """
    documents = [_validated(Document(workspace=workspace, title=title, content=content,
                                     author=author)) for title, content in items]
    for document in documents:
        document.content_hash = content_hash(document.content)
    with transaction.atomic():
        created = Document.objects.bulk_create(documents, batch_size=1000)
        jobs_create(kinds=[DOCUMENT_INDEX], object_ids=[d.pk for d in created],
                    workspace_id=workspace.pk, deliver=deliver)
        if summarize:
            jobs_create(kinds=[DOCUMENT_SUMMARY], object_ids=[d.pk for d in created],
                        workspace_id=workspace.pk)
    return created
