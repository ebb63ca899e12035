"""Reads of documents, always scoped to what the caller may see."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.db.models import QuerySet

from aistack.accounts.permissions import memberships_cache_key, readable_workspace_ids
from aistack.documents.models import Document
from aistack.errors import NotFound


def document_list(
    *, user: User | AnonymousUser, workspace_id: int | None = None, title: str | None = None
) -> QuerySet[Document]:
    """Return the documents the user may read, newest first."""
    documents = Document.objects.filter(workspace_id__in=readable_workspace_ids(user=user))
    if workspace_id is not None:
        documents = documents.filter(workspace_id=workspace_id)
    if title:
        documents = documents.filter(title__icontains=title)
    return documents.order_by("-created_at", "-id")


def document_get(*, user: User | AnonymousUser, document_id: int) -> Document:
    """Return one document the user may read; others look exactly like missing ones."""
    # One row at most: no ordering to build and run (``first()`` and the model's default
    # ordering would add one). Joined with its workspace, which most callers check or show.
    found = list(
        Document.objects.filter(pk=document_id, workspace_id__in=readable_workspace_ids(user=user))
        .select_related("workspace").order_by()[:1]
    )
    if not found:
        raise NotFound("Document not found.")
    return found[0]


@dataclass(frozen=True, kw_only=True)
class DocumentRef:
    """A document's identity and version: what its cached summary is keyed by."""

    pk: int
    workspace_id: int
    content_hash: str


# A document never changes workspace and changes content only through save(), whose
# signal drops this entry: the expiry only bounds what an unseen change could cost.
DOCUMENT_REF_CACHE_SECONDS = 3600


def document_ref_cache_key(document_id: int) -> str:
    """Return where a document's ``DocumentRef`` is cached."""
    return f"documents:ref:{document_id}"


def document_ref_get(*, user: User | AnonymousUser, document_id: int) -> DocumentRef:
    """Return the version of a document the user may read, from Redis when warm."""
    key = document_ref_cache_key(document_id)
    roles_key = memberships_cache_key(user.pk) if user.is_authenticated else None
    cached = cache.get_many([key, roles_key] if roles_key else [key])
    found: tuple[int, str] | None = cached.get(key)
    if found is None:
        found = (Document.objects.filter(pk=document_id)
                 .values_list("workspace_id", "content_hash").first())
        if found is None:
            raise NotFound("Document not found.")
        cache.set(key, found, timeout=DOCUMENT_REF_CACHE_SECONDS)
    ref = readable_ref(user=user, document_id=document_id, found=found,
                       roles=cached.get(roles_key))
    if ref is None:
        raise NotFound("Document not found.")
    return ref


def readable_ref(*, user: User | AnonymousUser, document_id: int, found: tuple[int, str],
                 roles: dict[int, str] | None) -> DocumentRef | None:
    """Return the version ``found`` (its cache entry) if the user, with ``roles``, may read it."""
    workspace_id, content_hash = found
    if workspace_id not in readable_workspace_ids(user=user, cached_roles=roles):
        return None
    return DocumentRef(pk=document_id, workspace_id=workspace_id, content_hash=content_hash)
