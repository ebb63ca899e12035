"""The compiled BM25 top-k, loaded by a process once its searches are large enough to
gain from it.

numpy sums every posting a search reads, several passes each; the compiled ranking
(``topk_kernel``) goes through them once and skips those that cannot reach the results.
bench/retrieval.py times both on the same searches in turns: over its million chunks
the text ranking (statement and scoring, 200 SciFact claims) took p50 / p95 10.3 / 33.8
ms in numpy and 4.6 / 13.6 compiled, over 100,000 chunks 3.4 / 5.4 and 2.4 / 4.2.

It costs a process about 160 MB (numba and LLVM) and, the first time on a machine, a few
seconds of compiling (then cached on disk), so a process loads it only once a search
reads LOAD_AT_POSTINGS postings, in a thread of its own: until it is ready, and where it
cannot load, numpy answers. Both give the same chunks with the same scores.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType

import numpy as np

from aistack.retrieval.postings import Postings

logger = logging.getLogger(__name__)

# About what a search reads over 10,000 documents (100,000 chunks), where numpy's ranking
# starts to cost milliseconds.
LOAD_AT_POSTINGS = 50_000

_kernel: ModuleType | None = None
_loading = threading.Lock()
_started = False


def load() -> bool:
    """Load (or first compile) the ranking here and now; return whether it is ready."""
    global _kernel
    with _loading:
        if _kernel is None:
            try:
                from aistack.retrieval import topk_kernel

                topk_kernel.warm()
            except Exception:  # numba missing, or no compiler for this CPU
                logger.exception("search: the compiled ranking did not load; numpy ranks")
                return False
            _kernel = topk_kernel
    return True


def wanted(postings: int) -> None:
    """Start loading the ranking in the background if a search of ``postings`` needs it."""
    global _started
    if _started or postings < LOAD_AT_POSTINGS:
        return
    _started = True
    threading.Thread(target=load, name="compiled-ranking", daemon=True).start()


def ready() -> bool:
    """Return whether this process ranks compiled."""
    return _kernel is not None


def best(lists: list[tuple[Postings, float, float]], depth: int, *, avgdl: float,
         k1: float, b: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``depth`` best chunk ids and rounded scores, in no order, of the
    (postings, weight, bound) lists; ``ready()`` must be true."""
    assert _kernel is not None
    if depth < 1 or not lists:
        return np.empty(0, dtype=np.int64), np.empty(0)
    lists = sorted(lists, key=lambda entry: entry[2])
    # Passed by address: held here, each as the kernel reads it (no copy when it is).
    held = [(np.ascontiguousarray(postings.chunk_ids, dtype=np.int64),
             np.ascontiguousarray(postings.tfs, dtype=np.int16),
             np.ascontiguousarray(postings.lengths, dtype=np.int32))
            for postings, _, _ in lists]
    if any(not arrays[0].size == arrays[1].size == arrays[2].size for arrays in held):
        # The kernel reads as many of each as there are ids, unchecked.
        raise ValueError("postings whose ids, frequencies and lengths differ in number")
    return _kernel.best(  # type: ignore[no-any-return]
        *(np.array([arrays[n].ctypes.data for arrays in held], dtype=np.int64)
          for n in range(3)),
        np.array([arrays[0].size for arrays in held], dtype=np.int64),
        np.array([weight for _, weight, _ in lists]),
        np.array([bound for _, _, bound in lists]),
        avgdl, k1, b, margin, depth)
