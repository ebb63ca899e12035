"""Search over chunks: vector (HNSW or exact), text (BM25 over the text index) and hybrid
(RRF in SQL).

The SQL is composed from constants of this module and integer ids; every value
that comes from a request is passed as a parameter.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.utils.html import escape
from pgvector import Vector

from aistack.retrieval.models import Chunk, ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.retrieval.textrank import text_ranking
from aistack.transactions import after_commit

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
# Each ranking contributes this many candidates to the fusion.
FUSION_DEPTH = 100
# HNSW finds the nearest vectors across all workspaces and pgvector filters after
# the scan; when the caller's workspaces hold few vectors, an exact scan of just
# those is both faster and complete.
EXACT_SCAN_MAX_VECTORS = 20_000
EXACT_SCAN_MAX_FRACTION = 0.2
# The HNSW candidate list, for an index of 100,000 vectors; a larger index needs a longer
# list for the same recall, so it grows as the 0.6th power of the index's size. Measured
# by bench/retrieval.py, recall@10 against exact search: over 100,000 chunks 0.944 at 100,
# 0.985 at 200 and 0.992 at 400; over 1,000,000 chunks 0.788 at 200, 0.916 at 800 (p95
# 22.8 ms) and 0.927 at 1,000.
HNSW_EF_SEARCH_MIN = 200
HNSW_EF_SEARCH_REFERENCE_SIZE = 100_000
HNSW_EF_SEARCH_MAX = 1000
_STATS_TTL_SECONDS = 60
# Control characters never occur in stored text, so they mark matches unambiguously
# until the snippet is escaped for HTML.
_MARK_START, _MARK_END = "\x02", "\x03"
_HEADLINE_SQL = """ts_headline('english', c.text, (
        SELECT coalesce(string_agg(quote_literal(u.lexeme), ' | '), '')::tsquery
        FROM unnest(to_tsvector('english', %(query)s)) u), %(headline_options)s)"""
_HEADLINE_OPTIONS = (
    f"StartSel={_MARK_START}, StopSel={_MARK_END}, MaxWords=40, MinWords=15, MaxFragments=2, "
    "FragmentDelimiter=\" … \""
)


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


# The text ranking, computed by retrieval.textrank, joins the query as two arrays.
_TEXT_RANKED_SQL = """
        text_ranked AS (
            SELECT chunk_id, score
            FROM unnest(%(text_ids)s::bigint[], %(text_scores)s::float8[]) t(chunk_id, score)
        )"""


def _vector_sql(space: EmbeddingSpace, *, exact: bool) -> str:
    width = int(space.dimensions)
    distance = f"cv.embedding::vector({width}) <=> %(vector)s::vector({width})"
    # "+ 0" hides the expression from the planner so it scans only the caller's
    # workspaces instead of walking the HNSW graph of everyone's vectors.
    order = f"({distance}) + 0" if exact else distance
    return f"""
        vector_ranked AS (
            SELECT cv.chunk_id, 1 - ({distance}) AS score
            FROM retrieval_chunkvector cv
            WHERE cv.space_id = {int(space.pk)} AND cv.workspace_id = ANY(%(workspaces)s)
            ORDER BY {order}
            LIMIT %(depth)s
        )"""


def _vector_plan(space: EmbeddingSpace, workspaces: list[int], depth: int) -> tuple[bool, int]:
    key = f"retrieval:space-size:{space.pk}:{','.join(map(str, sorted(workspaces)))}"
    sizes = cache.get(key)
    if sizes is None:
        vectors = ChunkVector.objects.filter(space=space)
        sizes = (vectors.filter(workspace_id__in=workspaces).count(), vectors.count())
        cache.set(key, sizes, _STATS_TTL_SECONDS)
    mine, everyone = sizes
    fraction = mine / everyone if everyone else 1.0
    exact = mine <= EXACT_SCAN_MAX_VECTORS or fraction <= EXACT_SCAN_MAX_FRACTION
    sized = HNSW_EF_SEARCH_MIN * max(1.0, everyone / HNSW_EF_SEARCH_REFERENCE_SIZE) ** 0.6
    ef_search = min(HNSW_EF_SEARCH_MAX,
                    max(math.ceil(sized), math.ceil(depth / max(fraction, 1e-6) * 1.5)))
    return exact, ef_search


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
) -> list[SearchHit]:
    """Return the ``k`` best chunks for ``query`` within the given workspaces."""
    if not workspace_ids or not query.strip():
        return []
    use_vectors = mode in {SearchMode.VECTOR, SearchMode.HYBRID} and space is not None
    use_text = mode in {SearchMode.TEXT, SearchMode.HYBRID}
    depth = max(k, FUSION_DEPTH) if mode == SearchMode.HYBRID else k
    params: dict[str, Any] = {
        "query": query, "workspaces": workspace_ids, "depth": depth, "k": k,
        # pgvector's text form, built once: as a list, each of its numbers would be
        # quoted in Python, and again for every place the query uses it.
        "vector": None if query_vector is None else Vector(query_vector).to_text(),
        "headline_options": _HEADLINE_OPTIONS,
    }
    ctes: list[str] = []
    ef_search = HNSW_EF_SEARCH_MIN
    walks_hnsw = False
    if use_vectors:
        assert space is not None and query_vector is not None
        planned_exact, ef_search = _vector_plan(space, workspace_ids, depth)
        walks_hnsw = not (planned_exact if exact is None else exact)
        ctes.append(_vector_sql(space, exact=not walks_hnsw))
    if use_text:
        ranking = text_ranking(workspace_ids=workspace_ids, query=query, depth=depth)
        params["text_ids"] = [chunk_id for chunk_id, _ in ranking]
        params["text_scores"] = [score for _, score in ranking]
        ctes.append(_TEXT_RANKED_SQL)
    if not ctes:
        return []
    if use_vectors and use_text:
        ranked = f"""
            SELECT coalesce(v.chunk_id, t.chunk_id) AS chunk_id,
                   coalesce(1.0 / ({RRF_K} + v.rank), 0) + coalesce(1.0 / ({RRF_K} + t.rank), 0)
                       AS score,
                   v.score AS similarity, t.score AS keyword_score
            FROM (SELECT chunk_id, score, row_number() OVER (ORDER BY score DESC) AS rank
                  FROM vector_ranked) v
            FULL OUTER JOIN (SELECT chunk_id, score,
                                    row_number() OVER (ORDER BY score DESC, chunk_id) AS rank
                             FROM text_ranked) t ON t.chunk_id = v.chunk_id"""
    elif use_vectors:
        ranked = ("SELECT chunk_id, score, score AS similarity, NULL::float8 AS keyword_score "
                  "FROM vector_ranked")
    else:
        ranked = ("SELECT chunk_id, score, NULL::float8 AS similarity, score AS keyword_score "
                  "FROM text_ranked")
    sql = f"""
        WITH {",".join(ctes)}
        SELECT r.chunk_id, c.document_id, d.title, r.score, r.similarity, r.keyword_score,
               {_HEADLINE_SQL if snippets else "''"}
        FROM ({ranked}) r
        JOIN retrieval_chunk c ON c.id = r.chunk_id
        JOIN documents_document d ON d.id = c.document_id
        ORDER BY r.score DESC, r.chunk_id
        LIMIT %(k)s"""
    # SET LOCAL lasts as long as its transaction: there is one only when the HNSW index
    # is walked, as an exact scan has no use for the setting (and the round trips).
    with transaction.atomic() if walks_hnsw else nullcontext(), connection.cursor() as cursor:
        if walks_hnsw:
            # Iterative scans (pgvector 0.8) walk on until the filter has kept the full
            # depth; relaxed order is re-sorted by the fusion and the final ORDER BY.
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                           "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                           [str(int(ef_search))])
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        SearchHit(chunk_id=chunk_id, document_id=document_id, document_title=title,
                  score=float(score), snippet=highlight(headline),
                  similarity=None if similarity is None else float(similarity),
                  keyword_score=None if keyword_score is None else float(keyword_score))
        for chunk_id, document_id, title, score, similarity, keyword_score, headline in rows
    ]


def highlight(headline: str) -> str:
    """Turn a headline with sentinel marks into safe HTML with <mark> around matches."""
    return escape(headline).replace(_MARK_START, "<mark>").replace(_MARK_END, "</mark>")


def chunks_of(document_id: int) -> list[Chunk]:
    """Return a document's chunks in order."""
    return list(Chunk.objects.filter(document_id=document_id).order_by("ordinal"))
