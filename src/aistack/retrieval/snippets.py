"""Snippets: the passages of a found chunk that show why it was found, its query's words
marked.

Made here rather than by PostgreSQL's ``ts_headline``, which parses every chunk of a
page of results again with the full text search parser: for ten results that was
most of a warm text search's time. A word is marked when its English stem
(``retrieval.stemming``) is one of the query's lexemes as PostgreSQL made them, so the
words marked are those search matched.
A lexeme that is not a plain word (an e-mail address, a URL) is found as it is written.
"""

from __future__ import annotations

import bisect
import html
import itertools
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from aistack.retrieval.stemming import WORD, stems

# As ts_headline was asked before: two passages of up to 40 words each.
MAX_WORDS = 40
MAX_FRAGMENTS = 2
FRAGMENT_DELIMITER = " … "
_SPLIT = re.compile(f"({WORD.pattern})")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class _Words:
    """A text's words (where each starts and ends), which the query matched, and the
    stretches of text to mark."""

    starts: list[int]
    ends: list[int]
    # The lexeme each matched word matched, by word index.
    matched: dict[int, str]
    # (start, end) of each stretch to mark, in order, none overlapping: a matched word,
    # or all of a lexeme found as written.
    marks: list[tuple[int, int]]


def _words(text: str, lexemes: Collection[str]) -> _Words:
    # Text between words, a word, text between words...: where each piece ends.
    pieces = _SPLIT.split(text)
    offsets = list(itertools.accumulate(map(len, pieces)))
    starts, ends = offsets[0:-1:2], offsets[1::2]
    matched = {i: stem for i, stem in enumerate(stems(pieces[1::2])) if stem in lexemes}
    marks = [(starts[i], ends[i]) for i in matched]
    for lexeme in lexemes:
        if WORD.fullmatch(lexeme):
            continue
        for found in re.finditer(re.escape(lexeme), text, re.IGNORECASE):
            marks.append(found.span())
            for i in range(bisect.bisect_left(starts, found.start()),
                           bisect.bisect_left(starts, found.end())):
                matched.setdefault(i, lexeme)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(marks):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return _Words(starts, ends, matched, merged)


def _fragments(words: _Words) -> list[tuple[int, int]]:
    """Return up to MAX_FRAGMENTS word ranges [start, end), in text order: each the window
    of MAX_WORDS holding the most query terms not shown yet (then the most matches), with
    its matches centred in it."""
    total = len(words.starts)
    if not words.matched:
        return [(0, min(total, MAX_WORDS))] if total else []
    free = sorted(words.matched)
    chosen: list[tuple[int, int]] = []
    shown: set[str] = set()
    for _ in range(MAX_FRAGMENTS):
        if chosen:
            free = [i for i in free if not chosen[-1][0] <= i < chosen[-1][1]]
        if not free:
            break
        best: tuple[tuple[int, int, int], int, int] | None = None
        # Windows starting at each free match in turn; both ends only ever move right.
        counts: Counter[str] = Counter()
        new_terms = j = 0
        for n, first in enumerate(free):
            # The window may not reach into a fragment already chosen after it.
            limit = min([start for start, _ in chosen if start > first] + [first + MAX_WORDS])
            while j < len(free) and free[j] < limit:
                term = words.matched[free[j]]
                counts[term] += 1
                new_terms += counts[term] == 1 and term not in shown
                j += 1
            score = (new_terms, len(counts), j - n)
            if best is None or score > best[0]:
                best = (score, first, free[j - 1])
            term = words.matched[first]
            counts[term] -= 1
            if not counts[term]:
                del counts[term]
                new_terms -= term not in shown
        assert best is not None
        _, first, last = best
        low = max([end for _, end in chosen if end <= first] + [0])
        high = min([start for start, _ in chosen if start > last] + [total])
        start = max(low, first - (MAX_WORDS - (last - first + 1)) // 2)
        end = min(high, start + MAX_WORDS)
        start = max(low, end - MAX_WORDS)
        chosen.append((start, end))
        shown.update(words.matched[i] for i in range(start, end) if i in words.matched)
    return sorted(chosen)


def snippet(text: str, lexemes: Collection[str]) -> str:
    """Return the HTML of ``text``'s passages that best show the query's ``lexemes``
    (PostgreSQL's, ``to_tsvector('english', query)``), each match in ``<mark>``: escaped
    text and marks, nothing else."""
    words = _words(text, frozenset(lexemes))
    parts = []
    for start, end in _fragments(words):
        # From the text's start or to its end when a passage reaches it, else from and to
        # a word.
        begin = words.starts[start] if start else 0
        finish = words.ends[end - 1] if end < len(words.ends) else len(text)
        pieces: list[str] = []
        at = begin
        for low, high in words.marks[bisect.bisect_left(words.marks, (begin, 0)):]:
            if low >= finish:
                break
            high = min(high, finish)
            pieces += [html.escape(text[at:low]), "<mark>", html.escape(text[low:high]),
                       "</mark>"]
            at = high
        pieces.append(html.escape(text[at:finish]))
        parts.append(_SPACE.sub(" ", "".join(pieces)).strip())
    return FRAGMENT_DELIMITER.join(parts)
