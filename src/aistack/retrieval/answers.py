"""Cited answers: retrieve passages, ask the chat model to answer from them, cite them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aistack.ai import services as ai
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import ChatRequest, ChatResult, Message
from aistack.rendering import CITATION, citations_inert, markdown_html
from aistack.retrieval.models import Chunk
from aistack.retrieval.selectors import SearchHit, SearchMode
from aistack.retrieval.services import search
from aistack.usage.types import Attribution

FEATURE = "ask"
# Cosine similarity (MiniLM) of the best passage below which the question is taken to
# be about something the documents do not cover: answered "I don't know" without a
# model call. Questions answered by a passage score 0.4-0.8; off-topic ones below 0.2.
MIN_RELEVANCE = 0.25
DONT_KNOW = "I don't know: nothing in your documents answers this."
# A rendered answer's [n] links to the element of this id and n: its source in the page.
CITATION_ANCHOR = "citation-"

ANSWER_PROMPT = PromptTemplate(
    name="answer",
    # The refusal sentence is fixed so that a refusal can be recognised and shown as
    # one; citing by number keeps the answer checkable against its sources.
    system=(
        "You answer questions for a team knowledge base using only the numbered sources "
        "below. After each statement, cite the sources it rests on in square brackets, "
        "like [1] or [2][3]. Do not use outside knowledge. If the sources do not answer "
        "the question, reply exactly: I don't know.\n\nSources:\n$sources"
    ),
)
@dataclass(frozen=True, kw_only=True)
class Source:
    """A retrieved passage as numbered in the prompt."""

    n: int
    document_id: int
    chunk_id: int
    snippet: str
    text: str
    title: str = ""


@dataclass(frozen=True, kw_only=True)
class AnswerPlan:
    """What to send to the model, or a refusal that needs no model call."""

    sources: tuple[Source, ...]
    request: ChatRequest | None
    attribution: Attribution


def sources_find(
    *, workspace_ids: list[int], query: str, k: int, attribution: Attribution,
) -> tuple[Source, ...]:
    """Return the passages that bear on ``query``, numbered from 1 as a prompt cites them.

    None when even the nearest passage is too far from it to be about the same thing.
    """
    nearest = search(workspace_ids=workspace_ids, query=query, k=1, mode=SearchMode.VECTOR,
                     attribution=attribution, snippets=False)
    if not nearest or nearest[0].score < MIN_RELEVANCE:
        return ()
    hits = search(workspace_ids=workspace_ids, query=query, k=k, mode=SearchMode.HYBRID,
                  attribution=attribution)
    return _sources(hits)


def sources_numbered(sources: Sequence[Source]) -> str:
    """Return the sources as a prompt lists them: "[n] text", a blank line apart."""
    return "\n\n".join(f"[{s.n}] {citations_inert(s.text)}" for s in sources)


def sources_context(sources: Sequence[Source]) -> tuple[str, ...]:
    """Return the sources' texts as a request's context, in their numbers' order."""
    return tuple(citations_inert(s.text) for s in sources)


def answer_plan(
    *, workspace_ids: list[int], question: str, k: int, user_id: int | None,
    feature: str = FEATURE,
) -> AnswerPlan:
    """Retrieve passages for ``question`` and build the model request that answers it;
    its model calls are recorded under ``feature``."""
    # On a user's behalf, the call is charged to every workspace it reads from, each an
    # equal share; an operator's over every workspace (the CLI's) to none of them.
    charged = tuple(workspace_ids) if user_id is not None or len(workspace_ids) == 1 else ()
    attribution = Attribution(feature=feature, user_id=user_id, workspace_ids=charged,
                              prompt_version=ANSWER_PROMPT.version)
    sources = sources_find(workspace_ids=workspace_ids, query=question, k=k,
                           attribution=attribution)
    if not sources:
        return AnswerPlan(sources=(), request=None, attribution=attribution)
    request = ChatRequest(
        messages=(*ANSWER_PROMPT.render(sources=sources_numbered(sources)),
                  Message(role="user", content=question)),
        context=sources_context(sources),
    )
    return AnswerPlan(sources=sources, request=request, attribution=attribution)


def _sources(hits: list[SearchHit]) -> tuple[Source, ...]:
    found = {pk: (text, title) for pk, text, title in
             Chunk.objects.filter(pk__in=[h.chunk_id for h in hits])
             .values_list("pk", "text", "document__title")}
    return tuple(
        Source(n=n, document_id=hit.document_id, chunk_id=hit.chunk_id, snippet=hit.snippet,
               text=found[hit.chunk_id][0], title=found[hit.chunk_id][1])
        for n, hit in enumerate(hits, start=1) if hit.chunk_id in found
    )


def cited(plan: AnswerPlan, answer: str) -> list[Source]:
    """Return the sources the answer cites, in order of first citation."""
    return sources_cited(plan.sources, answer)


def sources_cited(sources: Sequence[Source], answer: str) -> list[Source]:
    """Return those of ``sources`` that ``answer`` cites, in order of first citation."""
    by_number = {source.n: source for source in sources}
    seen: list[Source] = []
    for match in CITATION.finditer(answer):
        source = by_number.get(int(match.group(1)))
        if source is not None and source not in seen:
            seen.append(source)
    return seen


def citations_dropped(text: str) -> str:
    """Return an earlier answer without its [n]: a later turn numbers its own sources."""
    return CITATION.sub("", text)


def answer_render(plan: AnswerPlan, result: ChatResult | None) -> dict[str, object]:
    """Return the API's answer shape: text, the citations it uses, and the model."""
    text = result.text if result is not None else DONT_KNOW
    sources = cited(plan, text)
    return {
        "answer": text,
        "answer_html": markdown_html(text, cited=frozenset(s.n for s in sources),
                                     cite_prefix=CITATION_ANCHOR),
        "citations": [
            {"n": s.n, "document_id": s.document_id, "chunk_id": s.chunk_id,
             "snippet": s.snippet}
            for s in sources
        ],
        "model": result.model if result is not None else "",
        "extractive": result.extractive if result is not None else False,
        "answered": result is not None and bool(cited(plan, text)),
    }


def answer(plan: AnswerPlan) -> ChatResult | None:
    """Ask the chat model; None when retrieval found nothing worth asking about."""
    if plan.request is None:
        return None
    return ai.chat_complete(request=plan.request, attribution=plan.attribution)


def answer_stream(plan: AnswerPlan) -> ai.ChatStream | None:
    """Stream the chat model's answer; None when there is nothing to ask about."""
    if plan.request is None:
        return None
    return ai.chat_stream(request=plan.request, attribution=plan.attribution)
