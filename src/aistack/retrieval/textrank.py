"""BM25 ranking over the text index: one statement reads the query's terms' posting lists,
new postings and dropped chunks, and numpy scores every posting.

The statistics (document frequencies, chunk count, average length) are summed over the
searched workspaces alone, so a score never depends on what the caller cannot read. The
IDF is Lucene's, ln(1 + (N - df + 0.5) / (df + 0.5)), which is never negative.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from django.db import connection

from aistack.retrieval.postings import CHUNK_ID, Postings

# BM25 parameters tuned for short passages (the Anserini defaults are 0.9 and 0.4).
BM25_K1 = 0.9
BM25_B = 0.4
# Scores are ranked rounded to this many decimals, so that two chunks with the same terms
# tie exactly (their terms may be summed in another order), and ties go to the older chunk.
SCORE_DECIMALS = 9
# Scores are summed in a dense array over the span of chunk ids when it is at most this
# many times the postings read (or this long), else by sorting the ids.
_DENSE_SPAN_FACTOR = 8
_DENSE_SPAN_MIN = 1 << 22

# One snapshot: the lists, the postings not yet merged and the dropped chunks agree.
_READ_SQL = """
WITH text_query AS (
    SELECT DISTINCT u.lexeme FROM unnest(to_tsvector('english', %(query)s)) u
), corpus AS (
    SELECT coalesce(sum(chunks), 0) AS n,
           coalesce(sum(length)::float8 / nullif(sum(chunks), 0), 1) AS avgdl
    FROM retrieval_workspacecorpus WHERE workspace_id = ANY(%(workspaces)s)
), idf AS (
    SELECT t.lexeme, ln(1 + (greatest(corpus.n, t.df) - t.df + 0.5) / (t.df + 0.5)) AS weight
    FROM (SELECT w.lexeme, sum(w.df) AS df
          FROM retrieval_workspaceterm w JOIN text_query q ON q.lexeme = w.lexeme
          WHERE w.workspace_id = ANY(%(workspaces)s)
          GROUP BY w.lexeme) t, corpus
    WHERE t.df > 0
)
SELECT 'corpus', NULL, corpus.avgdl, NULL::bytea, NULL::bytea, NULL::bytea FROM corpus
UNION ALL
SELECT 'list', l.lexeme, i.weight, l.chunk_ids, l.tfs, l.lengths
FROM idf i JOIN retrieval_postinglist l ON l.lexeme = i.lexeme
WHERE l.workspace_id = ANY(%(workspaces)s)
UNION ALL
SELECT 'new', p.lexeme, i.weight, string_agg(int8send(p.chunk_id), '' ORDER BY p.chunk_id),
       string_agg(int2send(p.tf::int2), '' ORDER BY p.chunk_id),
       string_agg(int4send(p.length::int4), '' ORDER BY p.chunk_id)
FROM idf i JOIN retrieval_posting p ON p.lexeme = i.lexeme
WHERE p.workspace_id = ANY(%(workspaces)s)
GROUP BY p.lexeme, i.weight
UNION ALL
SELECT 'dropped', NULL, NULL, string_agg(int8send(d.chunk_id), '' ORDER BY d.chunk_id),
       NULL, NULL
FROM retrieval_droppedchunk d WHERE d.workspace_id = ANY(%(workspaces)s)
HAVING count(*) > 0
"""


def text_ranking(*, workspace_ids: list[int], query: str, depth: int
                 ) -> list[tuple[int, float]]:
    """Return the ``depth`` best (chunk id, BM25 score) for ``query``, best first."""
    with connection.cursor() as cursor:
        cursor.execute(_READ_SQL, {"query": query, "workspaces": workspace_ids})
        rows = cursor.fetchall()
    avgdl = 1.0
    dropped = np.empty(0, dtype=np.int64)
    terms: list[tuple[float, Postings, bool]] = []
    for kind, _, number, ids, tfs, lengths in rows:
        if kind == "corpus":
            avgdl = float(number)
        elif kind == "dropped":
            dropped = np.frombuffer(ids, CHUNK_ID).astype(np.int64)
        else:
            terms.append((float(number), Postings.unpack(ids, tfs, lengths), kind == "list"))
    chunk_ids, scores = [], []
    for weight, postings, merged in terms:
        # New postings belong to live chunks (theirs are deleted with them).
        if merged:
            postings = postings.without(dropped)
        tf = postings.tfs.astype(np.float64)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * postings.lengths / avgdl)
        chunk_ids.append(postings.chunk_ids)
        scores.append(weight * tf * (BM25_K1 + 1) / (tf + norm))
    if not chunk_ids:
        return []
    return _best(np.concatenate(chunk_ids), np.concatenate(scores), depth)


def _best(chunk_ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], depth: int
          ) -> list[tuple[int, float]]:
    """Sum each chunk's scores and return the best ``depth``, ties to the lower id."""
    low, high = int(chunk_ids.min()), int(chunk_ids.max())
    span = high - low + 1
    if span <= max(_DENSE_SPAN_MIN, _DENSE_SPAN_FACTOR * chunk_ids.size):
        totals = np.bincount(chunk_ids - low, weights=scores, minlength=span)
        ids = np.flatnonzero(totals)
        sums = totals[ids]
        ids += low
    else:
        ids, inverse = np.unique(chunk_ids, return_inverse=True)
        sums = np.bincount(inverse, weights=scores)
    rounded = np.round(sums, SCORE_DECIMALS)
    if ids.size > depth:
        # Everything scoring at least the depth-th best, ties at the edge included.
        edge = np.partition(rounded, ids.size - depth)[ids.size - depth]
        keep = rounded >= edge
        ids, rounded = ids[keep], rounded[keep]
    order = np.lexsort((ids, -rounded))[:depth]
    return [(int(i), float(s)) for i, s in zip(ids[order], rounded[order], strict=True)]
