"""Documents API: parse, authorize, delegate, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import File, Form, Router, Status
from ninja.files import UploadedFile

from aistack.accounts.permissions import default_workspace, ensure_can_write, workspace_for_read
from aistack.api_pagination import paginate
from aistack.documents import selectors, services, summaries
from aistack.documents.models import Document
from aistack.documents.schemas import (
    DocumentIn,
    DocumentOut,
    DocumentPage,
    DocumentPatch,
    SummaryOut,
)
from aistack.documents.summaries import SummaryState
from aistack.usage.ratelimits import ai_rate_limit_hit, write_rate_limit_hit
from aistack.validation import Text

router = Router(tags=["documents"])


@router.post("", response={201: DocumentOut})
def create_document(request: HttpRequest, payload: DocumentIn) -> Status[Document]:
    user = request.user
    assert user.is_authenticated
    write_rate_limit_hit(user=user)
    if payload.workspace is None:
        workspace = default_workspace(user=user)
    else:
        workspace = workspace_for_read(user=user, workspace_id=payload.workspace)
    ensure_can_write(user=user, workspace=workspace)
    document = services.document_create(
        workspace=workspace, title=payload.title, content=payload.content, author=user
    )
    return Status(201, document)


@router.post("/upload", response={201: DocumentOut})
def upload_document(
    request: HttpRequest,
    file: File[UploadedFile],
    workspace: Form[int | None] = None,
    title: Form[str | None] = None,
) -> Status[Document]:
    user = request.user
    assert user.is_authenticated
    write_rate_limit_hit(user=user)
    target = (default_workspace(user=user) if workspace is None
              else workspace_for_read(user=user, workspace_id=workspace))
    ensure_can_write(user=user, workspace=target)
    document = services.document_upload_create(
        workspace=target, file=file, content_type=file.content_type, author=user, title=title
    )
    return Status(201, document)


@router.get("", response=DocumentPage)
def list_documents(
    request: HttpRequest,
    workspace: int | None = None,
    title: Text | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    documents = selectors.document_list(user=request.user, workspace_id=workspace, title=title)
    return paginate(request, documents, limit=limit, offset=offset)


@router.get("/{int:document_id}", response=DocumentOut)
def get_document(request: HttpRequest, document_id: int) -> Document:
    return selectors.document_get(user=request.user, document_id=document_id)


@router.patch("/{int:document_id}", response=DocumentOut)
def update_document(request: HttpRequest, document_id: int, payload: DocumentPatch) -> Document:
    document = selectors.document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
    write_rate_limit_hit(user=request.user)
    return services.document_update(
        document=document, title=payload.title, content=payload.content
    )


@router.delete("/{int:document_id}", response={204: None})
def delete_document(request: HttpRequest, document_id: int) -> Status[None]:
    document = selectors.document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
    write_rate_limit_hit(user=request.user)
    services.document_delete(document=document)
    return Status(204, None)


@router.get("/{int:document_id}/summary", response=SummaryOut)
def get_summary(request: HttpRequest, document_id: int) -> SummaryState:
    """Return the summary: from cache when warm; a cold one is written once for all callers."""
    # The warm path reads Redis only: the permission check and the version come cached.
    ref = selectors.document_ref_get(user=request.user, document_id=document_id)
    if (state := summaries.summary_cached(ref=ref)) is not None:
        return state
    document = selectors.document_get(user=request.user, document_id=document_id)
    return summaries.summary_read(document=document)


@router.post("/{int:document_id}/summary", response={202: SummaryOut})
def request_summary(request: HttpRequest, document_id: int) -> Status[SummaryState]:
    """Queue the summary unless it is current or on its way; retries a failed one.

    409 when no retry can succeed: an upload whose text could not be extracted.
    """
    ai_rate_limit_hit(user=request.user)
    document = selectors.document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
    return Status(202, summaries.summary_request(document=document))
