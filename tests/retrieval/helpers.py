"""Index documents synchronously through the real job code path."""

from __future__ import annotations

from django.contrib.auth.models import User

from aistack.accounts.models import Workspace
from aistack.documents.indexing import DOCUMENT_INDEX, document_index_run
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.services import job_claim


def index_now(document: Document) -> Document:
    """Run the document's pending index job in this process."""
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk)
    assert run is not None, "no pending index job"
    document_index_run(run=run)
    document.refresh_from_db()
    return document


def indexed(workspace: Workspace, author: User | None, title: str, content: str) -> Document:
    return index_now(document_create(workspace=workspace, title=title, content=content,
                                     author=author))
