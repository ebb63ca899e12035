"""The compiled BM25 top-k (numba): imported only by ``aistack.retrieval.topk``, which
loads it in a thread of its own once a process needs it.

MaxScore (Turtle and Flood) over windows of chunk ids, as Lucene's bulk scorer does it.
The lists are sorted by their best score, lowest first; the top k found so far set a
floor, and the longest prefix of lists whose best scores sum under it are non-essential:
a chunk found in none of the others cannot reach the floor, so those lists are only
looked up (galloping forward, as the chunks come in id order) for chunks that the
essential lists found, and only while the chunk's sum can still reach it. Each window of
ids is summed from the essential lists into an accumulator that stays in the CPU's cache.

Each posting's score is computed as ``textrank._scores`` computes it (the same
operations in the same order, on the same grid), so a chunk's sum is exact whichever
order its terms come in, and it is rounded as ``numpy.round`` rounds it: the same chunks,
the same scores, the same ties as numpy's ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Chunk ids summed at a time: 32 KB of scores, which stay in the cache.
WINDOW = 4096
_ROUNDING = 1e9  # textrank.SCORE_DECIMALS
_GRID = 2.0**32  # textrank.SCORE_GRID


@intrinsic
def _pointer(typingctx: Any, address: Any) -> Any:
    """The array at ``address``: the lists are passed by address, as they are, uncopied."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(nogil=True, cache=True)
def _score(weight: float, tf: int, length: int, k1: float, b: float, avgdl: float) -> float:
    t = float(tf)
    return np.rint(weight * t * (k1 + 1) / (t + k1 * (1 - b + b * length / avgdl))
                   * _GRID) / _GRID


@njit(nogil=True, cache=True)
def _worse(score_a: float, id_a: int, score_b: float, id_b: int) -> bool:
    """Return whether a ranks below b: a lower score, or the same and a higher id."""
    return score_a < score_b or (score_a == score_b and id_a > id_b)


@njit(nogil=True, cache=True)
def _swap(scores: Any, ids: Any, a: int, b: int) -> None:
    scores[a], scores[b] = scores[b], scores[a]
    ids[a], ids[b] = ids[b], ids[a]


@njit(nogil=True, cache=True)
def _sift_down(scores: Any, ids: Any, size: int) -> None:
    at = 0
    while True:
        child = 2 * at + 1
        if child >= size:
            return
        if child + 1 < size and _worse(scores[child + 1], ids[child + 1],
                                       scores[child], ids[child]):
            child += 1
        if not _worse(scores[child], ids[child], scores[at], ids[at]):
            return
        _swap(scores, ids, at, child)
        at = child


@njit(nogil=True, cache=True)
def _sift_up(scores: Any, ids: Any, at: int) -> None:
    while at > 0:
        parent = (at - 1) // 2
        if not _worse(scores[at], ids[at], scores[parent], ids[parent]):
            return
        _swap(scores, ids, at, parent)
        at = parent


@njit(nogil=True, cache=True)
def best(id_addresses: Any, tf_addresses: Any, length_addresses: Any, sizes: Any,
         weights: Any, bounds: Any, avgdl: float, k1: float, b: float, margin: float,
         depth: int) -> tuple[Any, Any]:
    """Return the ``depth`` best (chunk ids, rounded scores), in no order.

    The lists (by the addresses of their int64 ids, int16 term frequencies and int32
    lengths, C-contiguous, ids ascending) come sorted by ``bounds`` (each list's highest
    score, or above it by a rounding error at most), lowest first.
    """
    n = sizes.size
    below = np.empty(n)  # the bounds of the lists up to each, summed
    total = 0.0
    for p in range(n):
        total += bounds[p]
        below[p] = total
    at = np.zeros(n, np.int64)  # each list's cursor
    top_scores = np.empty(depth)
    top_ids = np.empty(depth, np.int64)
    size = 0
    floor = -1.0
    essential = 0  # lists before this one are only looked up
    sums = np.zeros(WINDOW)
    seen = np.zeros(WINDOW, np.bool_)
    touched = np.empty(WINDOW, np.int64)
    while True:
        # The window starts at the lowest id left in an essential list.
        start = -1
        for p in range(essential, n):
            if at[p] < sizes[p]:
                first = carray(_pointer(id_addresses[p]), (sizes[p],), np.int64)[at[p]]
                if start < 0 or first < start:
                    start = first
        if start < 0:
            break
        end = start + WINDOW
        count = 0
        for p in range(essential, n):
            ids = carray(_pointer(id_addresses[p]), (sizes[p],), np.int64)
            tfs = carray(_pointer(tf_addresses[p]), (sizes[p],), np.int16)
            lengths = carray(_pointer(length_addresses[p]), (sizes[p],), np.int32)
            i = at[p]
            while i < sizes[p] and ids[i] < end:
                slot = ids[i] - start
                if not seen[slot]:
                    seen[slot] = True
                    touched[count] = slot
                    count += 1
                sums[slot] += _score(weights[p], tfs[i], lengths[i], k1, b, avgdl)
                i += 1
            at[p] = i
        looked_up = essential  # the floor may rise within the window; the lists summed may not
        for slot in np.sort(touched[:count]):
            score = sums[slot]
            sums[slot] = 0.0
            seen[slot] = False
            chunk = start + slot
            reachable = True
            for p in range(looked_up - 1, -1, -1):
                if score + below[p] < floor - margin:
                    reachable = False
                    break
                ids = carray(_pointer(id_addresses[p]), (sizes[p],), np.int64)
                low = at[p]
                if low >= sizes[p] or ids[low] > chunk:
                    continue
                # Gallop, then halve, to the first id at or after the chunk.
                step = 1
                high = low + 1
                while high < sizes[p] and ids[high] < chunk:
                    low = high
                    step *= 2
                    high = low + step
                high = min(high, sizes[p])
                while low < high:
                    middle = (low + high) // 2
                    if ids[middle] < chunk:
                        low = middle + 1
                    else:
                        high = middle
                at[p] = low
                if low < sizes[p] and ids[low] == chunk:
                    tfs = carray(_pointer(tf_addresses[p]), (sizes[p],), np.int16)
                    lengths = carray(_pointer(length_addresses[p]), (sizes[p],), np.int32)
                    score += _score(weights[p], tfs[low], lengths[low], k1, b, avgdl)
            if not reachable or (size == depth and score < floor - margin):
                continue
            rounded = np.rint(score * _ROUNDING) / _ROUNDING
            if size < depth:
                top_scores[size] = rounded
                top_ids[size] = chunk
                _sift_up(top_scores, top_ids, size)
                size += 1
            elif _worse(top_scores[0], top_ids[0], rounded, chunk):
                top_scores[0] = rounded
                top_ids[0] = chunk
                _sift_down(top_scores, top_ids, size)
            else:
                continue
            if size == depth:
                floor = top_scores[0]
                while essential < n and below[essential] < floor - margin:
                    essential += 1
    return top_ids[:size].copy(), top_scores[:size].copy()


def warm() -> None:
    """Compile the ranking (or read it from the cache): done before any search needs it.

    ``python -m aistack.retrieval.topk_kernel`` fills the cache ahead (the image build
    does).
    """
    ids = np.array([1, 2], dtype=np.int64)
    tfs = np.ones(2, dtype=np.int16)
    lengths = np.ones(2, dtype=np.int32)

    def address(array: np.ndarray) -> np.ndarray:
        return np.array([array.ctypes.data], dtype=np.int64)

    best(address(ids), address(tfs), address(lengths), np.array([2], dtype=np.int64),
         np.ones(1), np.ones(1), 1.0, 0.9, 0.4, 1e-7, 1)


if __name__ == "__main__":
    # Compiled under the module's own name, as searches import it.
    from aistack.retrieval import topk_kernel

    topk_kernel.warm()
