"""Documents API: parse, authorize, delegate, render."""

from __future__ import annotations

import functools
from typing import Any

from django.http import HttpRequest
from ninja import File, Form, Router, Status
from ninja.files import UploadedFile

from aistack.accounts.permissions import (
    default_workspace,
    ensure_can_write,
    memberships_cache_key,
    workspace_for_read,
)
from aistack.accounts.selectors import token_user_cache_key
from aistack.api_pagination import paginate
from aistack.cache import event_loop_cache
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
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.validation import Text

router = Router(tags=["documents"])


@router.post("", response={201: DocumentOut})
def create_document(request: HttpRequest, payload: DocumentIn) -> Status[Document]:
    user = request.user
    assert user.is_authenticated
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
    return services.document_update(
        document=document, title=payload.title, content=payload.content
    )


@router.delete("/{int:document_id}", response={204: None})
def delete_document(request: HttpRequest, document_id: int) -> Status[None]:
    document = selectors.document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
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


async def summary_warm_json(request: HttpRequest, *, document_id: int) -> str | None:
    """Return the body ``get_summary`` would send, if Redis alone can answer; else None.

    For the ASGI fast path (``aistack.fastpath``): the same token, permission and
    summary entries as the view, read in two round trips that do not block the event
    loop. It answers only when every entry is cached and allows the read; anything
    else, refusals included, is left to the view.
    """
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    token_key = token_user_cache_key(raw=raw.strip()) if scheme.lower() == "bearer" else None
    if token_key is None:
        return None
    ref_key = selectors.document_ref_cache_key(document_id)
    # Shared values, read here and never changed: each is unpickled once per process.
    cache = event_loop_cache()
    first = await cache.aget_many_shared([token_key, ref_key])
    user, found = first.get(token_key), first.get(ref_key)
    if user is None or found is None:
        return None
    # The summary's key is known now, so it is read with the roles, before the check.
    version = summaries.summary_version(document=selectors.DocumentRef(
        pk=document_id, workspace_id=found[0], content_hash=found[1]))
    roles_key = memberships_cache_key(user.pk)
    second = await cache.aget_many_shared([roles_key, version.cache_key])
    roles = second.get(roles_key)
    if roles is None or selectors.readable_ref(user=user, document_id=document_id, found=found,
                                               roles=roles) is None:
        return None
    state = summaries.summary_from_cached(version, second.get(version.cache_key))
    if state is None:
        return None
    # The API's own renderer: byte for byte what the view's response carries.
    from aistack.api import api

    rendered: str = api.renderer.render(request, _summary_out(state), response_status=200)
    return rendered


@functools.lru_cache(maxsize=512)
def _summary_out(state: SummaryState) -> dict[str, Any]:
    """The response's data for ``state``, built once per process: never change it."""
    out: dict[str, Any] = SummaryOut.from_orm(state).model_dump()
    return out


@router.post("/{int:document_id}/summary", response={202: SummaryOut})
def request_summary(request: HttpRequest, document_id: int) -> Status[SummaryState]:
    """Queue the summary unless it is current or on its way; retries a failed one."""
    ai_rate_limit_hit(user=request.user)
    document = selectors.document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
    return Status(202, summaries.summary_request(document=document))
