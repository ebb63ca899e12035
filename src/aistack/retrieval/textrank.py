"""BM25 ranking over the text index: one statement reads the query's terms' posting lists,
new postings and dropped chunks, and numpy scores every posting.

A process keeps the lists it read (up to SEARCH_CACHE_MB), by version: the statement
sends a list's arrays only when this process has not got that version of it (which it
names by its own stems of the query's words, to spare a round trip).

The statistics (document frequencies, chunk count, average length) are summed over the
searched workspaces alone, so a score never depends on what the caller cannot read. The
IDF is Lucene's, ln(1 + (N - df + 0.5) / (df + 0.5)), which is never negative.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from aistack.retrieval import topk
from aistack.retrieval.postings import CHUNK_ID, Postings
from aistack.retrieval.stemming import text_stems

# BM25 parameters tuned for short passages (the Anserini defaults are 0.9 and 0.4).
BM25_K1 = 0.9
BM25_B = 0.4
# Scores are ranked rounded to this many decimals, so that two chunks with the same terms
# tie exactly (their terms may be summed in another order), and ties go to the older chunk.
SCORE_DECIMALS = 9
# Each posting's score is a multiple of 2^-32: a chunk's scores then add up exactly in
# any order (a sum stays far below 2^21), so rankings that add them in different orders
# (numpy's and the compiled one) agree to the last bit, ties included.
SCORE_GRID = 2.0**32
# Scores are summed in a dense array over the span of chunk ids when it is at most this
# many times the postings read (or this long), else by sorting the ids.
_DENSE_SPAN_FACTOR = 8
_DENSE_SPAN_MIN = 1 << 16
# Lists of at most this many postings (or a fiftieth of a search's) are always summed.
_SHORT_LIST = 4_096
# What a bound must clear a floor by, well above float error and below score rounding.
_MARGIN = 1e-7


class ListCache:
    """The posting lists this process read, by (workspace, term, version), least recently
    used first out once they hold more than ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lists: OrderedDict[str, Postings] = OrderedDict()
        # "workspace:term:" to the key of the version held.
        self._held: dict[str, str] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def held(self, prefixes: set[str]) -> dict[str, Postings]:
        """Return the lists held for these "workspace:term:" prefixes, by key."""
        with self._lock:
            found = {}
            for prefix in prefixes:
                key = self._held.get(prefix)
                if key is not None:
                    self._lists.move_to_end(key)
                    found[key] = self._lists[key]
            return found

    def put(self, key: str, postings: Postings) -> None:
        size = postings.nbytes
        if size > self.budget:
            return
        prefix = key.rsplit(":", 1)[0] + ":"
        with self._lock:
            replaced = self._held.get(prefix)
            if replaced is not None:
                self._bytes -= self._lists.pop(replaced).nbytes
            self._lists[key] = postings
            self._held[prefix] = key
            self._bytes += size
            while self._bytes > self.budget:
                evicted_key, evicted = self._lists.popitem(last=False)
                del self._held[evicted_key.rsplit(":", 1)[0] + ":"]
                self._bytes -= evicted.nbytes


lists = ListCache(settings.CONFIG.search_cache_mb << 20)

# One snapshot: the lists, the postings not yet merged and the dropped chunks agree. A
# list's arrays come only when the caller has not cached that version of it.
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
), listed AS (
    SELECT l.workspace_id, l.lexeme, i.weight,
           l.workspace_id || ':' || l.lexeme || ':' || l.version AS key
    FROM idf i JOIN retrieval_postinglist l ON l.lexeme = i.lexeme
    WHERE l.workspace_id = ANY(%(workspaces)s)
)
SELECT 'corpus', NULL, corpus.avgdl, NULL::bytea, NULL::bytea, NULL::bytea FROM corpus
UNION ALL
SELECT 'list', l.key, l.weight, p.chunk_ids, p.tfs, p.lengths
FROM listed l JOIN retrieval_postinglist p USING (workspace_id, lexeme)
WHERE l.key <> ALL(%(cached)s)
UNION ALL
SELECT 'cached', l.key, l.weight, NULL, NULL, NULL FROM listed l WHERE l.key = ANY(%(cached)s)
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


def text_ranking(*, workspace_ids: list[int], query: str, depth: int,
                 using: str = DEFAULT_DB_ALIAS) -> list[tuple[int, float]]:
    """Return the ``depth`` best (chunk id, BM25 score) for ``query``, best first, read
    from the database ``using`` (the primary, or a replica)."""
    # The lists this process holds for the query's terms, by this process's stems of
    # them: a term stemmed otherwise by PostgreSQL has its list sent again, nothing worse.
    held = lists.held({f"{w}:{stem}:" for stem in text_stems(query) for w in workspace_ids})
    with connections[using].cursor() as cursor:
        cursor.execute(_READ_SQL, {"query": query, "workspaces": workspace_ids,
                                   "cached": list(held)})
        rows = cursor.fetchall()
    avgdl = 1.0
    dropped = np.empty(0, dtype=np.int64)
    terms: list[tuple[float, Postings, bool]] = []
    for kind, key, number, ids, tfs, lengths in rows:
        if kind == "corpus":
            avgdl = float(number)
        elif kind == "dropped":
            dropped = np.frombuffer(ids, CHUNK_ID).astype(np.int64)
        elif kind == "cached":
            terms.append((float(number), held[key], True))
        else:
            postings = Postings.unpack(ids, tfs, lengths)
            if kind == "list":
                lists.put(key, postings)
            terms.append((float(number), postings, kind == "list"))
    parts = []
    for weight, postings, merged in terms:
        # New postings belong to live chunks (theirs are deleted with them).
        live = postings.without(dropped) if merged else postings
        if live.chunk_ids.size:
            # The whole list's best bounds its live postings' best.
            parts.append(_Part(live, weight, avgdl, weight * _peak(postings, avgdl)))
    return _best(parts, depth)


def _scores(weight: float, tfs: npt.NDArray[np.int16], lengths: npt.NDArray[np.int32],
            avgdl: float) -> npt.NDArray[np.float64]:
    """Return the BM25 scores of a term of this weight (IDF) in these postings."""
    tf = tfs.astype(np.float64)
    norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / avgdl)
    return np.rint(weight * tf * (BM25_K1 + 1) / (tf + norm) * SCORE_GRID) / SCORE_GRID


def _peak(postings: Postings, avgdl: float) -> float:
    """Return the highest score of a term of weight 1 in ``postings``.

    Kept with the postings for the average length it was worked out at, which changes
    only as the corpus does: a list this process keeps is scored in full only once.
    """
    peak = postings.peaks.get(avgdl)
    if peak is None:
        peak = float(_scores(1.0, postings.tfs, postings.lengths, avgdl).max())
        postings.peaks.clear()  # the corpus has changed since
        postings.peaks[avgdl] = peak
    return peak


class _Part:
    """One list's (or its new postings') chunk ids, ascending, scored only as needed."""

    def __init__(self, postings: Postings, weight: float, avgdl: float, bound: float) -> None:
        self.chunk_ids = postings.chunk_ids
        self.postings, self.weight, self.avgdl = postings, weight, avgdl
        # This part's highest score, or above it (give or take a rounding error).
        self.bound = bound

    @cached_property
    def scores(self) -> npt.NDArray[np.float64]:
        return _scores(self.weight, self.postings.tfs, self.postings.lengths, self.avgdl)

    def add_to(self, chunk_ids: npt.NDArray[np.int64], sums: npt.NDArray[np.float64]) -> None:
        """Add this part's scores of the given chunks (ascending ids) to ``sums``."""
        found = np.searchsorted(self.chunk_ids, chunk_ids)
        inside = found < self.chunk_ids.size
        hit = np.zeros(chunk_ids.size, dtype=bool)
        hit[inside] = self.chunk_ids[found[inside]] == chunk_ids[inside]
        at = found[hit]
        sums[hit] += _scores(self.weight, self.postings.tfs[at], self.postings.lengths[at],
                             self.avgdl)


def _best(parts: list[_Part], depth: int) -> list[tuple[int, float]]:
    """Return the ``depth`` chunks of highest summed score, ties to the lower id:
    compiled once this process has loaded that ranking (``topk``), else in numpy."""
    if not parts:
        return []
    topk.wanted(sum(part.chunk_ids.size for part in parts))
    if not topk.ready():
        return _best_numpy(parts, depth)
    ids, scores = topk.best([(part.postings, part.weight, part.bound) for part in parts],
                            depth, avgdl=parts[0].avgdl, k1=BM25_K1, b=BM25_B,
                            margin=_MARGIN)
    order = np.lexsort((ids, -scores))
    return [(int(i), float(s)) for i, s in zip(ids[order], scores[order], strict=True)]


def _best_numpy(parts: list[_Part], depth: int) -> list[tuple[int, float]]:
    """``_best`` in numpy.

    MaxScore (Turtle and Flood): the short lists are scored first, and their depth-th
    best sum is a floor the final depth-th best can only rise from. Long lists whose
    best scores together stay under that floor cannot lift a chunk found in none of
    the others into the results: they are only looked up for the chunks that are.
    """
    if not parts:
        return []
    total = sum(part.chunk_ids.size for part in parts)
    short = [p for p in parts if p.chunk_ids.size <= max(_SHORT_LIST, total // 50)]
    long = sorted((p for p in parts if p not in short), key=lambda p: p.bound)
    floor = _depth_th(_summed(short), depth) if short else 0.0
    lookups: list[_Part] = []
    reach = 0.0
    for part in long:
        if reach + part.bound >= floor - _MARGIN:
            break
        lookups.append(part)
        reach += part.bound
    ids, sums = _summed(short + long[len(lookups):])
    # Looked up highest bound first: after each list, only chunks that the lists left
    # could still lift to the floor (which rises as sums grow) are looked up in the next.
    for part in reversed(lookups):
        floor = max(floor, _depth_th((ids, sums), depth))
        keep = sums + reach >= floor - _MARGIN
        ids, sums = ids[keep], sums[keep]
        part.add_to(ids, sums)
        reach -= part.bound
    rounded = np.round(sums, SCORE_DECIMALS)
    if ids.size > depth:
        # Everything scoring at least the depth-th best, ties at the edge included.
        edge = np.partition(rounded, ids.size - depth)[ids.size - depth]
        keep = rounded >= edge
        ids, rounded = ids[keep], rounded[keep]
    order = np.lexsort((ids, -rounded))[:depth]
    return [(int(i), float(s)) for i, s in zip(ids[order], rounded[order], strict=True)]


def _depth_th(summed: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], depth: int
              ) -> float:
    """Return the depth-th highest sum, or 0 when there are fewer."""
    _, sums = summed
    return float(np.partition(sums, sums.size - depth)[sums.size - depth]) \
        if sums.size >= depth else 0.0


def _summed(parts: list[_Part]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Return the chunk ids found in any of ``parts``, ascending, and their summed scores."""
    if not parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    chunk_ids = np.concatenate([part.chunk_ids for part in parts])
    scores = np.concatenate([part.scores for part in parts])
    low, high = int(chunk_ids.min()), int(chunk_ids.max())
    span = high - low + 1
    if span <= max(_DENSE_SPAN_MIN, _DENSE_SPAN_FACTOR * chunk_ids.size):
        totals = np.bincount(chunk_ids - low, weights=scores, minlength=span)
        found = np.flatnonzero(totals)
        return (found + low).astype(np.int64), totals[found].astype(np.float64)
    ids, inverse = np.unique(chunk_ids, return_inverse=True)
    return ids.astype(np.int64), np.bincount(inverse, weights=scores).astype(np.float64)
