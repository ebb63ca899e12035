"""Search: BM25 in SQL, vectors, hybrid fusion, scoping and the API."""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from aistack.accounts.models import Workspace
from aistack.ai.exceptions import AIError
from aistack.documents.models import Document
from aistack.documents.services import document_delete, document_update
from aistack.retrieval.models import Chunk, ChunkVector, WorkspaceCorpus, WorkspaceTerm
from aistack.retrieval.selectors import (
    GOOD_MATCH_SIMILARITY,
    SearchHit,
    SearchMode,
    active_space,
    chunk_search,
)
from aistack.retrieval.services import search
from aistack.usage.models import UsageRecord
from aistack.usage.types import Attribution
from tests.conftest import ApiClient
from tests.retrieval.helpers import (
    bm25_reference,
    index_now,
    indexed,
    synthetic_vectors,
    unit,
)

ATTRIBUTION = Attribution(feature="search")

CORPUS = {
    "Vacation policy": "Employees receive 25 days of paid vacation per year. Unused days "
                       "carry over until the end of March.",
    "Incident response": "When an alert fires, the on-call engineer acknowledges it within "
                         "five minutes and opens an incident channel.",
    "Pasta": "Boil plenty of water, salt it generously, and cook the spaghetti for nine "
             "minutes before draining.",
    "Deploys": "Deploys run from the main branch through the pipeline; the on-call engineer "
               "can roll back a deploy from the dashboard.",
}


@pytest.fixture
def corpus(alice: User) -> dict[str, Document]:
    return {title: indexed(alice.personal_workspace, alice, title, text)
            for title, text in CORPUS.items()}


def titles(hits: list, documents: dict[str, Document]) -> list[str]:  # type: ignore[type-arg]
    by_id = {doc.pk: title for title, doc in documents.items()}
    return [by_id[hit.document_id] for hit in hits]


def test_text_search_matches_any_term_and_prefers_rare_ones(
    alice: User, corpus: dict[str, Document]
) -> None:
    hits = search(workspace_ids=[alice.personal_workspace.pk],
                  query="which engineer can roll back the spaghetti?", k=4,
                  mode=SearchMode.TEXT, attribution=ATTRIBUTION)

    # "spaghetti" and "roll back" are rarer than "engineer", which two documents share.
    assert titles(hits, corpus)[:2] == ["Deploys", "Pasta"] or \
        titles(hits, corpus)[:2] == ["Pasta", "Deploys"]
    assert "Vacation policy" not in titles(hits, corpus)


def test_bm25_scores_match_an_independent_computation(
    alice: User, corpus: dict[str, Document]
) -> None:
    from django.core.cache import cache

    cache.clear()  # corpus statistics are cached for a minute
    query = "on-call engineer deploys days"

    hits = search(workspace_ids=[alice.personal_workspace.pk], query=query, k=10,
                  mode=SearchMode.TEXT, attribution=ATTRIBUTION)

    expected = bm25_reference(query, [alice.personal_workspace.pk])
    assert {hit.chunk_id: round(hit.score, 6) for hit in hits} == {
        chunk_id: round(score, 6) for chunk_id, score in expected.items()}
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_document_frequencies_follow_creates_edits_and_deletes(
    alice: User, bob: User, corpus: dict[str, Document]
) -> None:
    def recomputed() -> tuple[dict[tuple[int, str], int], dict[int, tuple[int, int]]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT c.workspace_id, u.lexeme, count(*) FROM retrieval_chunk c, "
                           "unnest(c.search_vector) u GROUP BY 1, 2")
            terms = {(w, lexeme): n for w, lexeme, n in cursor.fetchall()}
            cursor.execute("SELECT workspace_id, count(*), sum(term_count) "
                           "FROM retrieval_chunk GROUP BY 1")
            return terms, {w: (n, length) for w, n, length in cursor.fetchall()}

    def stored() -> tuple[dict[tuple[int, str], int], dict[int, tuple[int, int]]]:
        terms = {(w, lexeme): df for w, lexeme, df in WorkspaceTerm.objects.filter(df__gt=0)
                 .values_list("workspace_id", "lexeme", "df")}
        return terms, {w: (n, length) for w, n, length in WorkspaceCorpus.objects.filter(
            chunks__gt=0).values_list("workspace_id", "chunks", "length")}

    indexed(bob.personal_workspace, bob, "Bob's pasta", "Spaghetti, again and again.")
    assert stored() == recomputed()
    document_update(document=corpus["Pasta"], content="Risotto needs constant stirring.")
    index_now(corpus["Pasta"])
    assert stored() == recomputed()
    assert (alice.personal_workspace.pk, "spaghetti") not in stored()[0]
    assert (bob.personal_workspace.pk, "spaghetti") in stored()[0]
    document_delete(document=corpus["Deploys"])
    assert stored() == recomputed()


def test_vector_search_finds_meaning_not_words(alice: User,
                                               corpus: dict[str, Document]) -> None:
    hits = search(workspace_ids=[alice.personal_workspace.pk],
                  query="how many holidays do I get?", k=2, mode=SearchMode.VECTOR,
                  attribution=ATTRIBUTION)

    assert titles(hits, corpus)[0] == "Vacation policy"
    assert hits[0].score > 0.3 > hits[1].score


def test_hybrid_fuses_both_rankings(alice: User, corpus: dict[str, Document]) -> None:
    hits = search(workspace_ids=[alice.personal_workspace.pk],
                  query="how many holidays, and who can roll back a deploy?", k=4,
                  mode=SearchMode.HYBRID, attribution=ATTRIBUTION)

    assert set(titles(hits, corpus)[:2]) == {"Vacation policy", "Deploys"}


def test_each_hit_says_whether_it_matches_by_words_or_meaning_at_all(
    alice: User, alice_api: ApiClient, corpus: dict[str, Document]
) -> None:
    def run(query: str, mode: SearchMode) -> list[SearchHit]:
        return search(workspace_ids=[alice.personal_workspace.pk], query=query, k=4,
                      mode=mode, attribution=ATTRIBUTION)

    # Hybrid search always returns the nearest passages, however far they are.
    nonsense = run("xylophone quantum giraffe", SearchMode.HYBRID)
    assert len(nonsense) == 4
    assert all(hit.keyword_score is None for hit in nonsense)
    assert all(hit.similarity is not None and hit.similarity < GOOD_MATCH_SIMILARITY
               for hit in nonsense)
    assert not any(hit.good_match for hit in nonsense)

    [words, *_] = run("spaghetti", SearchMode.HYBRID)
    assert titles([words], corpus) == ["Pasta"]
    assert words.keyword_score is not None and words.keyword_score > 0
    assert words.similarity is not None and words.good_match

    # No word in common: a match by meaning alone.
    [meaning, *_] = run("holiday allowance", SearchMode.VECTOR)
    assert titles([meaning], corpus) == ["Vacation policy"]
    assert meaning.keyword_score is None
    assert meaning.similarity == meaning.score >= GOOD_MATCH_SIMILARITY
    assert meaning.good_match

    [text] = run("spaghetti", SearchMode.TEXT)
    assert (text.similarity, text.keyword_score) == (None, text.score)

    results = alice_api.get("/api/v1/search", {"q": "xylophone quantum giraffe"}).json()["results"]
    assert [r["good_match"] for r in results] == [False] * 4
    assert [r["similarity"] for r in results] == [hit.similarity for hit in nonsense]
    assert {r["keyword_score"] for r in results} == {None}


def test_search_never_crosses_workspaces(alice: User, bob: User,
                                         corpus: dict[str, Document]) -> None:
    indexed(bob.personal_workspace, bob, "Bob's notes", "Spaghetti carbonara uses eggs.")

    for mode in SearchMode:
        hits = search(workspace_ids=[bob.personal_workspace.pk], query="spaghetti vacation",
                      k=10, mode=mode, attribution=ATTRIBUTION)
        assert {hit.document_id for hit in hits} <= {
            Document.objects.get(title="Bob's notes").pk}


def test_unchanged_text_is_never_embedded_twice(alice: User) -> None:
    paragraphs = [f"Section {n}. " + "The quarterly report covers revenue and costs. " * 25
                  for n in range(6)]
    document = indexed(alice.personal_workspace, alice, "Report", "\n\n".join(paragraphs))
    chunks = Chunk.objects.filter(document=document).count()
    embedded = UsageRecord.objects.filter(feature="embedding").count()
    assert chunks >= 6

    paragraphs[2] = "Section 2. Entirely rewritten: headcount grew by four people."
    document_update(document=document, content="\n\n".join(paragraphs))
    index_now(document)

    new_calls = UsageRecord.objects.filter(feature="embedding").order_by("pk")[embedded:]
    # One call, for the rewritten chunk(s) only; the rest came from stored vectors.
    assert len(new_calls) == 1
    assert new_calls[0].input_tokens < 60
    assert ChunkVector.objects.filter(chunk__document=document).count() == \
        Chunk.objects.filter(document=document).count()


def test_a_small_workspace_gets_full_k_results_with_exact_recall(
    alice: User, bob: User, corpus: dict[str, Document]
) -> None:
    rng = random.Random(7)
    synthetic_vectors(alice.personal_workspace, 3000, rng, alice)
    synthetic_vectors(bob.personal_workspace, 30, rng, bob)  # 1% of all vectors
    space = active_space()
    assert space is not None
    query = unit(rng, space.dimensions)

    def run(workspace: Workspace, exact: bool | None) -> list[int]:
        return [hit.chunk_id for hit in chunk_search(
            workspace_ids=[workspace.pk], query="n", query_vector=query, k=10,
            mode=SearchMode.VECTOR, space=space, exact=exact)]

    small = run(bob.personal_workspace, exact=None)
    assert len(small) == 10
    assert small == run(bob.personal_workspace, exact=True)
    large = run(alice.personal_workspace, exact=None)
    assert len(set(large) & set(run(alice.personal_workspace, exact=True))) >= 9


def test_the_hnsw_index_keeps_the_full_k_for_a_workspace_it_rarely_meets(
    alice: User, bob: User, corpus: dict[str, Document]
) -> None:
    # Bob's 12 vectors are 0.4% of the index: a walk of ef_search (at most 1,000)
    # candidates meets about 4 of them, and the filter would leave fewer than k. The
    # iterative scan walks on until the filter has kept k.
    rng = random.Random(3)
    synthetic_vectors(alice.personal_workspace, 3000, rng, alice)
    synthetic_vectors(bob.personal_workspace, 12, rng, bob)
    space = active_space()
    assert space is not None
    query = unit(rng, space.dimensions)

    def run(exact: bool) -> list[int]:
        return [hit.chunk_id for hit in chunk_search(
            workspace_ids=[bob.personal_workspace.pk], query="n", query_vector=query, k=10,
            mode=SearchMode.VECTOR, space=space, exact=exact)]

    with connection.cursor() as cursor:
        # At this size the planner would rather sort the workspace's vectors: make it walk.
        cursor.execute("SET LOCAL enable_sort = off")
        walked = run(exact=False)
    assert len(walked) == 10
    assert len(set(walked) & set(run(exact=True))) >= 9


def test_search_api_shapes_errors_and_highlights(alice: User, alice_api: ApiClient,
                                                 bob_api: ApiClient) -> None:
    indexed(alice.personal_workspace, alice, "Escaping",
            "Never trust <script>alert('x')</script> input from the vacation form.")

    body = alice_api.get("/api/v1/search", {"q": "vacation form", "k": 5}).json()
    [result] = body["results"]
    assert body["mode"] == "hybrid"
    assert {"document_id", "chunk_id", "score", "snippet", "document_title"} <= result.keys()
    assert "<mark>vacation</mark>" in result["snippet"]
    # Markup in documents never reaches the snippet as markup.
    assert "<script" not in result["snippet"]
    assert "&#x27;x&#x27;" in result["snippet"]

    assert bob_api.get("/api/v1/search", {"q": "vacation"}).json()["results"] == []
    foreign = bob_api.get("/api/v1/search", {"q": "x", "workspace": alice.personal_workspace.pk})
    assert foreign.status_code == 404
    for params in ({"q": ""}, {}, {"q": "x", "k": 0}, {"q": "x", "k": 101},
                   {"q": "x", "mode": "psychic"}, {"q": "x" * 2001}):
        response = alice_api.get("/api/v1/search", params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid"


def test_hybrid_search_falls_back_to_keywords_when_no_worker_embeds_the_query(
    alice: User, alice_api: ApiClient, corpus: dict[str, Document], settings: Any,
) -> None:
    from aistack.ai.backends.local_service import service_stop

    service_stop()  # no worker answers in this process
    settings.AI_EMBEDDING_MODELS = {"default": {**settings.AI_EMBEDDING_MODELS["default"],
                                                "OPTIONS": {"RUN_IN": "worker"}}}
    settings.AI_TIMEOUT_SECONDS = 0.3
    settings.AI_MAX_ATTEMPTS = 1
    query = "who can roll back a deploy?"
    workspaces = [alice.personal_workspace.pk]

    hybrid = search(workspace_ids=workspaces, query=query, k=4, mode=SearchMode.HYBRID,
                    attribution=ATTRIBUTION)
    text = search(workspace_ids=workspaces, query=query, k=4, mode=SearchMode.TEXT,
                  attribution=ATTRIBUTION)

    assert titles(hybrid, corpus)[0] == "Deploys"
    assert [hit.chunk_id for hit in hybrid] == [hit.chunk_id for hit in text]
    with pytest.raises(AIError, match="is a worker running"):
        search(workspace_ids=workspaces, query=query, k=4, mode=SearchMode.VECTOR,
               attribution=ATTRIBUTION)
    # The API says which mode answered.
    body = alice_api.get("/api/v1/search", {"q": query, "k": 4}).json()
    assert body["mode"] == "text"
    assert [r["chunk_id"] for r in body["results"]] == [hit.chunk_id for hit in text]
