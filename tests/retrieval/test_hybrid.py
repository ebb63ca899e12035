"""Hybrid search: its text ranking runs beside the vector search, on a connection of its
own, and the two are fused by reciprocal rank."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction

from aistack.retrieval.embedding import query_vector
from aistack.retrieval.selectors import (
    RRF_K,
    SearchHit,
    SearchMode,
    active_space,
    ranking_depth,
    vector_ranking,
)
from aistack.retrieval.services import search
from aistack.retrieval.textrank import text_ranking
from aistack.usage.types import Attribution
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)

ATTRIBUTION = Attribution(feature="search")
TEXTS = {
    "Vacation": "Employees receive 25 days of paid vacation a year; unused days carry over.",
    "Holidays": "Public holidays are days off for everyone, and do not count as leave.",
    "Sick leave": "Call your manager before nine when you are ill; a note is needed after "
                  "three days.",
    "Deploys": "Deploys run from the main branch; the on-call engineer can roll one back.",
    "Incidents": "When an alert fires, the on-call engineer acknowledges it in five minutes.",
    "Pasta": "Boil plenty of water, salt it, and cook the spaghetti for nine minutes.",
    "Bread": "Knead the dough for ten minutes and let it rise for an hour.",
    "Travel": "Book trains a week ahead; flights need a manager's approval.",
}
QUERY = "how many days off do I get, and who approves the trip?"
K = 5


def expected_fusion(workspace_id: int) -> list[tuple[int, float | None, float | None]]:
    """The rankings run one after the other on this connection, fused here exactly."""
    space = active_space()
    assert space is not None
    depth = ranking_depth(SearchMode.HYBRID, K)
    vector = vector_ranking(
        space=space, workspace_ids=[workspace_id], depth=depth,
        query_vector=query_vector(space=space, query=QUERY, attribution=ATTRIBUTION))
    text = text_ranking(workspace_ids=[workspace_id], query=QUERY, depth=depth)
    fused: dict[int, Fraction] = {}
    for ranking in (vector, text):
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, Fraction(0)) + Fraction(1, RRF_K + rank)
    best = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], chunk_id))[:K]
    return [(chunk_id, dict(vector).get(chunk_id), dict(text).get(chunk_id))
            for chunk_id in best]


def found(hits: list[SearchHit]) -> list[tuple[int, float | None, float | None]]:
    return [(hit.chunk_id, hit.similarity, hit.keyword_score) for hit in hits]


def hybrid(workspace_id: int) -> list[SearchHit]:
    try:
        return search(workspace_ids=[workspace_id], query=QUERY, k=K,
                      mode=SearchMode.HYBRID, attribution=ATTRIBUTION)
    finally:
        connection.close()


# The built-in model embeds the query before the text ranking starts; a provider
# elsewhere (here the scripted one) embeds it while the ranking runs.
@pytest.mark.parametrize("embedding", [None, "scripted:hash"])
def test_hybrid_search_fuses_rankings_run_side_by_side_as_one_after_the_other(
        alice: User, use_models: Callable[..., None], embedding: str | None) -> None:
    if embedding is not None:
        use_models(embedding=embedding)
    workspace = alice.personal_workspace
    for title, text in TEXTS.items():
        indexed(workspace, alice, title, text)
    space = active_space()
    assert space is not None and space.model.startswith(embedding or "local:")
    expected = expected_fusion(workspace.pk)
    # Both rankings count: some hits hold none of the query's words.
    assert any(keyword is None for _, _, keyword in expected)
    assert any(keyword is not None for _, _, keyword in expected)

    assert found(hybrid(workspace.pk)) == expected  # text ranked on another connection
    with transaction.atomic():  # here, one after the other
        assert found(search(workspace_ids=[workspace.pk], query=QUERY, k=K,
                            mode=SearchMode.HYBRID, attribution=ATTRIBUTION)) == expected


def test_more_hybrid_searches_at_once_than_pooled_connections_all_finish(alice: User) -> None:
    # Each search holds one connection at a time: none waits for another's while it
    # holds its own, so a full pool only queues them.
    workspace = alice.personal_workspace
    for title, text in TEXTS.items():
        indexed(workspace, alice, title, text)
    expected = expected_fusion(workspace.pk)
    pool = connection.pool
    assert pool is not None
    searchers = 3 * pool.max_size
    with ThreadPoolExecutor(searchers) as threads:
        results = list(threads.map(hybrid, [workspace.pk] * (4 * searchers)))
    assert all(found(hits) == expected for hits in results)
