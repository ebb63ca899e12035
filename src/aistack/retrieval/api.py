"""Search API: parse, authorize, delegate, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from aistack.accounts.permissions import readable_workspaces, workspace_for_read
from aistack.ai.types import Attribution
from aistack.documents.models import Document
from aistack.retrieval.schemas import SearchOut
from aistack.retrieval.selectors import SearchMode
from aistack.retrieval.services import search

router = Router(tags=["search"])

MAX_QUERY_CHARS = 2000


class SearchParams(Schema):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")
    k: int = Field(default=10, ge=1, le=100)
    mode: SearchMode = SearchMode.HYBRID
    workspace: int | None = Field(default=None, description="Defaults to all of yours.")


def workspace_ids_for(request: HttpRequest, workspace: int | None) -> list[int]:
    """Return the ids of the workspaces a request may search."""
    if workspace is not None:
        return [workspace_for_read(user=request.user, workspace_id=workspace).pk]
    return list(readable_workspaces(user=request.user).values_list("pk", flat=True))


@router.get("", response=SearchOut)
def search_chunks(request: HttpRequest, params: Query[SearchParams]) -> dict[str, Any]:
    workspace_ids = workspace_ids_for(request, params.workspace)
    hits = search(
        workspace_ids=workspace_ids, query=params.q, k=params.k, mode=params.mode,
        attribution=Attribution(feature="search", user_id=request.user.pk),
    )
    titles = dict(Document.objects.filter(pk__in={hit.document_id for hit in hits})
                  .values_list("pk", "title"))
    return {
        "mode": params.mode.value,
        "results": [
            {"document_id": hit.document_id, "chunk_id": hit.chunk_id, "score": hit.score,
             "snippet": hit.snippet, "document_title": titles.get(hit.document_id, "")}
            for hit in hits
        ],
    }
