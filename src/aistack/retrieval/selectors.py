"""Search over chunks: vector (HNSW or exact), text (BM25 over the text index) and hybrid
(the two fused by reciprocal rank).

The SQL is composed from constants of this module and integer ids; every value
that comes from a request is passed as a parameter.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections

from aistack.jobs import kinds
from aistack.jobs.selectors import jobs_failures
from aistack.retrieval.fields import vector_text
from aistack.retrieval.models import Chunk, ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.retrieval.snippets import Matcher
from aistack.retrieval.textrank import text_ranking
from aistack.transactions import after_commit, connection_give_back

# Reciprocal rank fusion constant from Cormack et al. (2009).
RRF_K = 60
# Cosine similarity (all-MiniLM-L6-v2, the default model) from which a passage that shares
# no word with the query still matches it well, by meaning. Measured with that model:
# off-topic queries ("xylophone quantum giraffe" 0.07, "banana bread recipe", "chess
# openings", "asdf qwer zxcv") reach 0.20 at most against the demo documents' paragraphs,
# and most stay under 0.14; paraphrases that share no word with the paragraph they mean
# ("holidays", "who approves my days off", "new hire") reach 0.21-0.42 (2 of 15 fell
# short), and 98% of SciFact's claims score 0.2 or more against an abstract judged to
# support them. Fused hybrid scores cannot tell: RRF ranks the least bad passage first,
# however bad it is. (Ask's MIN_RELEVANCE is higher: there a low score withholds an
# answer, here it only labels results.)
GOOD_MATCH_SIMILARITY = 0.2
# Each ranking contributes this many candidates to the fusion (or as many as the results
# asked for, if more). Deeper buys nothing measurable for 10 results: on SciFact's 809
# training claims (bench/fusion_depth.py --split train) nDCG@10 stays within 0.0015 of
# 100 deep from 20 to 60 (30: +0.0007, 95% interval -0.0048 to +0.0059), while both
# rankings cost less the shallower they go (the vector one down to about 66).
FUSION_DEPTH = 30
# HNSW finds the nearest vectors across all workspaces and pgvector filters after
# the scan; when the caller's workspaces hold few vectors, or a small share of the
# index, an exact scan of just those is complete, and faster than walking on until the
# filter has kept enough. The scan costs about 0.5 ms a thousand vectors here
# (bench/retrieval.py: 1,000 in 3.5 ms, 99,000 in 49 ms, a search's other work
# included) and a search through the index about 5 ms: beyond 5,000 vectors the index
# is faster, and loses nothing (at 11,700, SciFact's nDCG@10 is the same either way).
EXACT_SCAN_MAX_VECTORS = 5_000
EXACT_SCAN_MAX_FRACTION = 0.2
# The HNSW candidate list (ef_search), for an index of 100,000 vectors; a larger index
# needs a longer list for the same recall, so it grows as the 0.78th power of the index's
# size (600 at a million). Measured by bench/retrieval.py --ef-sweep, recall@10 against
# exact search (and p95 of the walk): over 100,000 chunks 0.954 at 60, 0.985 at 80, 0.991
# at 100 (4.0 ms) and 0.999 at 200; over 1,000,000 chunks 0.950 at 200, 0.978 at 400,
# 0.985 at 600 (12.0 ms) and 0.993 at 800 (15.7 ms).
HNSW_EF_SEARCH_MIN = 100
HNSW_EF_SEARCH_GROWTH = 0.78
HNSW_EF_SEARCH_REFERENCE_SIZE = 100_000
HNSW_EF_SEARCH_MAX = 1000
# The HNSW index holds vectors at half precision: it finds this many candidates (or one
# and a half times the depth asked for, if more), which the full vectors then rank.
RERANK_CANDIDATES_MIN = 40
_STATS_TTL_SECONDS = 60
# The query's lexemes, as the text index holds terms (for the snippets).
_LEXEMES_SQL = """(SELECT array_agg(DISTINCT u.lexeme)
                   FROM unnest(to_tsvector('english', %(query)s)) u)"""


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    TEXT = "text"


@dataclass(frozen=True, kw_only=True)
class SearchHit:
    """A ranked chunk, with how well it matches the query."""

    chunk_id: int
    document_id: int
    document_title: str
    # What the ranking sorts by: in hybrid mode a fused rank, which compares passages of
    # one search with each other and says nothing of how well any of them matches.
    score: float
    # Cosine similarity to the query; None when vectors were not searched, or this chunk
    # was not among the nearest.
    similarity: float | None
    # BM25 of the query's words in this chunk; None when it holds none of them, or text
    # was not searched (or, in hybrid mode, it was not among the best that hold some).
    keyword_score: float | None
    snippet: str

    @property
    def good_match(self) -> bool:
        """Return whether the passage holds a word of the query or is close to its meaning."""
        return self.keyword_score is not None or (
            self.similarity is not None and self.similarity >= GOOD_MATCH_SIMILARITY)


_ACTIVE_SPACE_KEY = "retrieval:active-space"
# The services that change which space is active rewrite the entry once they commit:
# the expiry only bounds what a change made some other way could cost.
_ACTIVE_SPACE_TTL_SECONDS = 300


def _active_space_read() -> EmbeddingSpace | bool:
    return EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).first() or False


def active_space() -> EmbeddingSpace | None:
    """Return the embedding space search reads, if any vectors exist yet."""
    cached: EmbeddingSpace | bool | None = cache.get(_ACTIVE_SPACE_KEY)
    if cached is None:
        cached = _active_space_read()
        # Added, not set: a switch that committed since this read has written its own.
        cache.add(_ACTIVE_SPACE_KEY, cached, _ACTIVE_SPACE_TTL_SECONDS)
    return cached if isinstance(cached, EmbeddingSpace) else None


def _active_space_rewrite() -> None:
    cache.set(_ACTIVE_SPACE_KEY, _active_space_read(), _ACTIVE_SPACE_TTL_SECONDS)


def active_space_changed() -> None:
    """Make search read the newly active space once the current transaction commits."""
    after_commit(_active_space_rewrite)


def _vector_sql(space: EmbeddingSpace, *, exact: bool) -> str:
    width, space_id = int(space.dimensions), int(space.pk)
    distance = f"cv.embedding::vector({width}) <=> %(vector)s::vector({width})"
    if exact:
        # "+ 0" hides the expression from the planner so it scans only the caller's
        # workspaces instead of walking the HNSW graph of everyone's vectors. Each
        # distance is computed once, for the sort, and the nearest are scored from it.
        return f"""
            SELECT chunk_id, 1 - distance AS score
            FROM (SELECT cv.chunk_id, ({distance}) + 0 AS distance
                  FROM retrieval_chunkvector cv
                  WHERE cv.space_id = {space_id} AND cv.workspace_id = ANY(%(workspaces)s)
                  ORDER BY 2
                  LIMIT %(depth)s) nearest"""
    # The index holds half-precision vectors: the nearest candidates it finds are
    # ranked again by their full vectors.
    return f"""
        SELECT cv.chunk_id, 1 - ({distance}) AS score
        FROM (SELECT cv.chunk_id, cv.embedding
              FROM retrieval_chunkvector cv
              WHERE cv.space_id = {space_id} AND cv.workspace_id = ANY(%(workspaces)s)
              ORDER BY cv.embedding::halfvec({width}) <=> %(vector)s::halfvec({width})
              LIMIT %(candidates)s) cv
        ORDER BY 2 DESC
        LIMIT %(depth)s"""


# Iterative scans (pgvector 0.8) walk on until the filter has kept the full depth; in
# relaxed order, so the rows are sorted here.
_HNSW_SETTINGS_SQL = """
    SELECT set_config('hnsw.ef_search', %(ef_search)s, true),
           set_config('hnsw.iterative_scan', 'relaxed_order', true);"""


def _candidates(depth: int) -> int:
    return max(RERANK_CANDIDATES_MIN, depth * 3 // 2)


def _vector_plan(space: EmbeddingSpace, workspaces: list[int], depth: int,
                 using: str = DEFAULT_DB_ALIAS) -> tuple[bool, int]:
    key = f"retrieval:space-size:{space.pk}:{','.join(map(str, sorted(workspaces)))}"
    sizes = cache.get(key)
    if sizes is None:
        vectors = ChunkVector.objects.using(using).filter(space=space)
        sizes = (vectors.filter(workspace_id__in=workspaces).count(), vectors.count())
        cache.set(key, sizes, _STATS_TTL_SECONDS)
    mine, everyone = sizes
    fraction = mine / everyone if everyone else 1.0
    # A space gets its index only once it outgrows exact scans (``spaces``).
    exact = (not space.indexed or mine <= EXACT_SCAN_MAX_VECTORS
             or fraction <= EXACT_SCAN_MAX_FRACTION)
    sized = HNSW_EF_SEARCH_MIN * max(
        1.0, everyone / HNSW_EF_SEARCH_REFERENCE_SIZE) ** HNSW_EF_SEARCH_GROWTH
    wanted = _candidates(depth)
    ef_search = min(HNSW_EF_SEARCH_MAX,
                    max(math.ceil(sized), wanted, math.ceil(wanted / max(fraction, 1e-6))))
    return exact, ef_search


def ranking_depth(mode: SearchMode, k: int) -> int:
    """Return how many candidates each ranking of a search for ``k`` results returns."""
    return max(k, FUSION_DEPTH) if mode == SearchMode.HYBRID else k


def vector_ranking(*, space: EmbeddingSpace, workspace_ids: list[int],
                   query_vector: list[float], depth: int, exact: bool | None = None,
                   ef_search: int | None = None,
                   using: str = DEFAULT_DB_ALIAS) -> list[tuple[int, float]]:
    """Return the ``depth`` (chunk id, cosine similarity) nearest the query, best first,
    read from the database ``using`` (the primary, or a replica).

    ``exact`` and ``ef_search`` override the plan (for tests and benchmarks).
    """
    planned_exact, planned_ef_search = _vector_plan(space, workspace_ids, depth, using)
    ef_search = planned_ef_search if ef_search is None else ef_search
    walks_hnsw = not (planned_exact if exact is None else exact)
    params: dict[str, Any] = {
        "workspaces": workspace_ids, "depth": depth, "candidates": _candidates(depth),
        # pgvector's text form: as a list, each number would be quoted in Python.
        "vector": vector_text(query_vector), "ef_search": str(int(ef_search))}
    with connections[using].cursor() as cursor:
        if walks_hnsw:
            # The walk's settings and the search in one message, so in one round trip:
            # PostgreSQL runs a message's statements as one transaction (unless the
            # caller's is open), which local settings last for. An explicit one cost
            # three more round trips, about 0.6 ms a search.
            cursor.execute(_HNSW_SETTINGS_SQL + _vector_sql(space, exact=False), params)
            cursor.nextset()
        else:
            cursor.execute(_vector_sql(space, exact=True), params)
        rows = cursor.fetchall()
    return sorted(((chunk_id, float(score)) for chunk_id, score in rows),
                  key=lambda row: (-row[1], row[0]))


@dataclass(frozen=True)
class _Ranked:
    chunk_id: int
    score: float
    similarity: float | None
    keyword_score: float | None


def _fused(vector: list[tuple[int, float]] | None, text: list[tuple[int, float]] | None,
           k: int) -> list[_Ranked]:
    """Return the ``k`` best of one ranking, or of both fused by reciprocal rank."""
    if vector is None or text is None:
        one = vector if vector is not None else text or []
        return [_Ranked(chunk_id, score, score if vector is not None else None,
                        score if vector is None else None) for chunk_id, score in one[:k]]
    similarity, keyword = dict(vector), dict(text)
    fused: dict[int, float] = {}
    for ranking in (vector, text):
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    # Equal sums of different ranks, such as (6, 39) and (12, 28), can differ in their
    # last bit; unequal ones differ by 1e-9 at least (ranks up to 100): rounded, equal
    # sums tie, and ties go to the lower id.
    best = sorted(fused.items(), key=lambda item: (-round(item[1], 12), item[0]))[:k]
    return [_Ranked(chunk_id, score, similarity.get(chunk_id), keyword.get(chunk_id))
            for chunk_id, score in best]


def _hits(ranked: list[_Ranked], k: int, *, query: str, workspace_ids: list[int],
          snippets: bool, using: str) -> list[SearchHit]:
    """Return the first ``k`` ranked chunks that still exist as hits, with their
    documents and, if asked, snippets."""
    if not ranked:
        return []
    # The rankings read the caller's workspaces only; the filter keeps it so whatever
    # changed since. Snippets are made for the k kept alone.
    sql = f"""
        SELECT c.id, c.document_id, d.title, {"c.text" if snippets else "''"},
               {_LEXEMES_SQL if snippets else "NULL::text[]"}
        FROM (SELECT c.id, c.document_id, c.text
              FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY r(chunk_id, n)
              JOIN retrieval_chunk c ON c.id = r.chunk_id
              WHERE c.workspace_id = ANY(%(workspaces)s)
              ORDER BY r.n
              LIMIT %(k)s) c
        JOIN documents_document d ON d.id = c.document_id"""
    with connections[using].cursor() as cursor:
        # The ids as one array literal: psycopg adapts a list of hundreds item by item.
        ids = "{" + ",".join(str(int(r.chunk_id)) for r in ranked) + "}"
        cursor.execute(sql, {"ids": ids, "query": query, "k": k,
                             "workspaces": workspace_ids})
        rows = cursor.fetchall()
    matcher = Matcher(rows[0][4] or ()) if snippets and rows else None
    found = {chunk_id: (document_id, title, matcher.snippet(text) if matcher else "")
             for chunk_id, document_id, title, text, _ in rows}
    return [
        SearchHit(chunk_id=r.chunk_id, document_id=found[r.chunk_id][0],
                  document_title=found[r.chunk_id][1], score=r.score,
                  snippet=found[r.chunk_id][2], similarity=r.similarity,
                  keyword_score=r.keyword_score)
        for r in ranked if r.chunk_id in found
    ]


def chunk_search(
    *,
    workspace_ids: list[int],
    query: str,
    query_vector: list[float] | None,
    k: int,
    mode: SearchMode,
    space: EmbeddingSpace | None,
    exact: bool | None = None,
    snippets: bool = True,
    text_ranked: Future[list[tuple[int, float]]] | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[SearchHit]:
    """Return the ``k`` best chunks for ``query`` within the given workspaces, read from
    the database ``using`` (the primary, or a replica).

    ``text_ranked``: the text ranking (``text_ranking`` at ``ranking_depth``), started
    beforehand to run beside the vector search (on the same database); it is waited for
    here.
    """
    if not workspace_ids or not query.strip():
        return []
    use_vectors = mode in {SearchMode.VECTOR, SearchMode.HYBRID} and space is not None
    use_text = mode in {SearchMode.TEXT, SearchMode.HYBRID}
    depth = ranking_depth(mode, k)
    vector = None
    if use_vectors:
        assert space is not None and query_vector is not None
        vector = vector_ranking(space=space, workspace_ids=workspace_ids,
                                query_vector=query_vector, depth=depth, exact=exact,
                                using=using)
    text = None
    if use_text and text_ranked is not None:
        connection_give_back()  # no waiting on another thread with a connection held
        text = text_ranked.result()
    elif use_text:
        text = text_ranking(workspace_ids=workspace_ids, query=query, depth=depth,
                            using=using)
    return _hits(_fused(vector, text, 2 * k), k, query=query, workspace_ids=workspace_ids,
                 snippets=snippets, using=using)


def chunks_of(document_id: int) -> list[Chunk]:
    """Return a document's chunks in order."""
    return list(Chunk.objects.filter(document_id=document_id).order_by("ordinal"))


# The kind of the re-embedding jobs, registered by ``reindex`` (which imports this module).
REEMBED_KIND = "retrieval.reembed"


@dataclass(frozen=True, kw_only=True)
class SpaceProgress:
    """How far the vectors of an embedding model being switched to have come."""

    model: str
    embedded: int
    chunks: int
    # Documents that could not be re-embedded (each holds the switch back until retried),
    # and the latest reason.
    failed: int
    failure: str


def spaces_building() -> list[SpaceProgress]:
    """Return each embedding space being filled, with its progress."""
    total = Chunk.objects.count()
    found = []
    for space in EmbeddingSpace.objects.filter(status=SpaceStatus.BUILDING):
        failed, failure = jobs_failures(kind=kinds.get(REEMBED_KIND), since=space.created_at)
        found.append(SpaceProgress(model=space.model, chunks=total, failed=failed,
                                   failure=failure,
                                   embedded=ChunkVector.objects.filter(space=space).count()))
    return found


def spaces_live_models() -> list[str]:
    """Return the models of the active space and of any being built."""
    return list(EmbeddingSpace.objects.exclude(status=SpaceStatus.RETIRED)
                .values_list("model", flat=True))
