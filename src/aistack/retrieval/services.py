"""Search: hybrid, vector or keyword, over the workspaces a caller may read."""

from __future__ import annotations

import logging
from concurrent.futures import Future

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection

from aistack.ai import InvalidModelError, embedding_model_for
from aistack.ai.exceptions import AIError
from aistack.replicas import replica_failed, search_database
from aistack.retrieval.embedding import query_vector
from aistack.retrieval.models import EmbeddingSpace
from aistack.retrieval.selectors import (
    SearchHit,
    SearchMode,
    active_space,
    chunk_search,
    ranking_depth,
)
from aistack.retrieval.textrank import text_ranking
from aistack.transactions import alongside
from aistack.usage.types import Attribution

logger = logging.getLogger(__name__)

# Results in a page of search (the search page, the API's default).
SEARCH_RESULTS = 10


def search(
    *, workspace_ids: list[int], query: str, k: int, mode: SearchMode,
    attribution: Attribution, exact: bool | None = None, snippets: bool = True,
) -> list[SearchHit]:
    """Return the best chunks for ``query`` in the workspaces (the caller checked access).

    Hybrid search whose query cannot be embedded (the model's provider, or the workers
    that run the local model, unreachable) answers with keyword search alone; vector
    search raises the model's error.
    """
    hits, _ = search_and_mode(workspace_ids=workspace_ids, query=query, k=k, mode=mode,
                              attribution=attribution, exact=exact, snippets=snippets)
    return hits


def search_and_mode(
    *, workspace_ids: list[int], query: str, k: int, mode: SearchMode,
    attribution: Attribution, exact: bool | None = None, snippets: bool = True,
) -> tuple[list[SearchHit], SearchMode]:
    """``search``, and the mode it used: text when a hybrid query could not be embedded.

    Read from a replica when one has replayed the workspaces' latest changes (see
    ``aistack.replicas``); from the primary inside a transaction, which may hold writes
    of its own, and when the replica fails.
    """
    # A text search reads no vectors: it is spared the lookup of their space.
    space = None if mode == SearchMode.TEXT else active_space()
    using = DEFAULT_DB_ALIAS if connection.in_atomic_block else search_database(workspace_ids)
    vector = text_ranked = None
    hybrid = (mode == SearchMode.HYBRID and space is not None and bool(workspace_ids)
              and bool(query.strip()))

    def text_alongside() -> Future[list[tuple[int, float]]]:
        return alongside(text_ranking, workspace_ids=workspace_ids, query=query,
                         depth=ranking_depth(mode, k), using=using)

    # The text ranking runs beside the vector search, and beside embedding the query when
    # another process does that (a provider, or the workers that run the built-in model).
    # Embedding here takes this process's cores, which the ranking would only take from
    # the model (the same GIL, and the cores ONNX Runtime spreads over). Hybrid searches
    # whose query is embedded anew in this process, p95 over two runs each: SciFact's 300
    # claims, 19.5 and 19.4 ms with the ranking started first, 16.7 and 15.9 started
    # after; 200 of them over 100,000 chunks, 19.4 and 19.4 against 18.8 and 18.3.
    if hybrid and not _embeds_here(space):
        text_ranked = text_alongside()
    if mode != SearchMode.TEXT and space is not None and query.strip():
        try:
            vector = query_vector(space=space, query=query, attribution=attribution)
        except AIError as exc:
            if mode == SearchMode.VECTOR:
                raise
            logger.warning("search: query not embedded (%s); keyword results only", exc)
            mode = SearchMode.TEXT
    if hybrid and mode == SearchMode.HYBRID and text_ranked is None:
        text_ranked = text_alongside()
    try:
        hits = chunk_search(workspace_ids=workspace_ids, query=query, query_vector=vector,
                            k=k, mode=mode, space=space, exact=exact, snippets=snippets,
                            text_ranked=text_ranked, using=using)
    except DatabaseError as exc:
        if using == DEFAULT_DB_ALIAS:
            raise
        replica_failed(using, exc)
        hits = chunk_search(workspace_ids=workspace_ids, query=query, query_vector=vector,
                            k=k, mode=mode, space=space, exact=exact, snippets=snippets)
    return hits, mode


def _embeds_here(space: EmbeddingSpace | None) -> bool:
    """Return whether the space's model runs in this process (the built-in model, unless
    workers run it for this process)."""
    try:
        return space is not None and embedding_model_for(space.model).runs_here()
    except InvalidModelError:  # embedding the query says what is wrong, or is not needed
        return False
