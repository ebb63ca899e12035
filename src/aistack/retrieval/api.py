"""Search API: parse, authorize, delegate, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from aistack.accounts.permissions import workspace_ids_for_read
from aistack.retrieval.answers import answer, answer_plan, answer_render, answer_stream
from aistack.retrieval.schemas import SearchOut
from aistack.retrieval.selectors import SearchMode
from aistack.retrieval.services import SEARCH_RESULTS, search_and_mode
from aistack.streaming import sse_response, sse_response_of
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.usage.types import Attribution
from aistack.validation import Text

router = Router(tags=["search"])

MAX_QUERY_CHARS = 2000


class SearchParams(Schema):
    q: Text = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")
    k: int = Field(default=SEARCH_RESULTS, ge=1, le=100)
    mode: SearchMode = SearchMode.HYBRID
    workspace: int | None = Field(default=None, description="Defaults to all of yours.")


@router.get("", response=SearchOut)
def search_chunks(request: HttpRequest, params: Query[SearchParams]) -> dict[str, Any]:
    # A text search asks no model.
    if params.mode != SearchMode.TEXT:
        ai_rate_limit_hit(user=request.user)
    workspace_ids = workspace_ids_for_read(user=request.user, workspace_id=params.workspace)
    hits, mode = search_and_mode(
        workspace_ids=workspace_ids, query=params.q, k=params.k, mode=params.mode,
        attribution=Attribution(feature="search", user_id=request.user.pk,
                                workspace_ids=tuple(workspace_ids)),
    )
    return {"mode": mode.value, "results": hits}


ask_router = Router(tags=["answers"])


class AskIn(Schema):
    question: Text = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=6, ge=1, le=20, description="How many passages the answer may draw on.")
    stream: bool = False
    workspace: int | None = Field(default=None, description="Defaults to all of yours.")


class CitationOut(Schema):
    n: int
    document_id: int
    chunk_id: int
    snippet: str


class AskOut(Schema):
    answer: str
    answer_html: str = Field(description="`answer` rendered from Markdown to sanitized HTML; "
                                         "each cited [n] links to `#citation-n`.")
    citations: list[CitationOut]
    model: str = Field(description="The model that wrote the answer; empty when none was asked.")
    extractive: bool = Field(description="True when the answer quotes the sources verbatim.")
    answered: bool = Field(description="False when the answer is that nothing was found.")


@ask_router.post("", response=AskOut)
def ask(request: HttpRequest, payload: AskIn) -> dict[str, object] | StreamingHttpResponse:
    ai_rate_limit_hit(user=request.user)
    workspace_ids = workspace_ids_for_read(user=request.user, workspace_id=payload.workspace)
    plan = answer_plan(workspace_ids=workspace_ids, question=payload.question, k=payload.k,
                       user_id=request.user.pk)
    if not payload.stream:
        return answer_render(plan, answer(plan))
    stream = answer_stream(plan)
    if stream is None:
        return sse_response_of(answer_render(plan, None))
    return sse_response(stream, lambda result: answer_render(plan, result))
