"""Reads of documents, always scoped to what the caller may see."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from aistack.accounts.permissions import readable_workspaces
from aistack.documents.models import Document
from aistack.errors import NotFound


def document_list(
    *, user: User | AnonymousUser, workspace_id: int | None = None, title: str | None = None
) -> QuerySet[Document]:
    """Return the documents the user may read, newest first."""
    documents = Document.objects.filter(workspace__in=readable_workspaces(user=user))
    if workspace_id is not None:
        documents = documents.filter(workspace_id=workspace_id)
    if title:
        documents = documents.filter(title__icontains=title)
    return documents.order_by("-created_at", "-id")


def document_get(*, user: User | AnonymousUser, document_id: int) -> Document:
    """Return one document the user may read; others look exactly like missing ones."""
    document = (
        Document.objects.filter(pk=document_id, workspace__in=readable_workspaces(user=user))
        .select_related("workspace")
        .first()
    )
    if document is None:
        raise NotFound("Document not found.")
    return document
