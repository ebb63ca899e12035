"""Snippets: the passages of a found chunk that show why it was found, the query's
words marked.

Made here rather than by PostgreSQL's ``ts_headline``, which parses the whole of every
chunk of a page of results again with the full text search parser (about 2 ms for ten
results, most of a warm text search's time). A chunk is searched for the words that
begin as a lexeme of the query does (PostgreSQL's lexemes, ``to_tsvector('english',
query)``), and only those few are stemmed (``retrieval.stemming``) to see whether they
are that lexeme, so the words marked are the words search matched. Lexemes that are
not plain words (``-8``, ``2.5``, an e-mail address) are found as they are written.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection

from aistack.retrieval.stemming import WORD, stems_of

# Up to two passages of about 40 words each.
FRAGMENT_CHARS = 240
MAX_FRAGMENTS = 2
FRAGMENT_DELIMITER = " … "
# Snippets come from a chunk's first this many characters (a chunk of prose holds a
# couple of thousand; one long unbroken run of letters can hold a whole document).
SCAN_CHARS = 20_000
# At most this many places in a text are looked at for each of the query's lexemes,
# and at most this many of its lexemes (the longest) are looked for: a few dozen places
# and a dozen lexemes make a query on a chunk of prose.
SCAN_STEPS = 200
SCAN_LEXEMES = 32
_HYPHENATED = re.compile(r"[^\W_]+(?:-[^\W_]+)+")
# What continues a number or a path past a word: ".5" after "1", "/b" after "a".
_NOT_A_WORD_AFTER = re.compile(r"[./][^\W_]")
_SPACE = re.compile(r"\s")
_LAST_WORD = re.compile(r"[^\W_]*\Z")
# A fragment's edge moves at most this far to fall between words.
_LONG_WORD = 40
# Control characters never occur in stored text: they mark matches until escaping is done.
_MARK_START, _MARK_END = "\x02", "\x03"


class Matcher:
    """Finds a query's lexemes in texts: made once per query, used for each hit."""

    def __init__(self, lexemes: Collection[str]) -> None:
        self.lexemes = frozenset(sorted((lexeme for lexeme in lexemes if lexeme),
                                        key=lambda lexeme: (-len(lexeme), lexeme))
                                 [:SCAN_LEXEMES])
        words = [lexeme for lexeme in self.lexemes if WORD.fullmatch(lexeme)]
        # Snowball changes at most a word's last letter before its stem ends (studies ->
        # studi, hoping -> hope): a word can be a lexeme's only if it starts with all of
        # the lexeme but its last letter, or, for three words it knows (dying, lying,
        # tying), as the lexeme does with its "ie" as "y".
        self._prefixes = sorted({word[:-1] or word for word in words}
                                | {word[:-2] + "y" for word in words if word.endswith("ie")})
        # Other lexemes are found as written, but for hyphenated words, whose parts are
        # lexemes of their own and marked as PostgreSQL marks them, one by one.
        self._literals = sorted(
            lexeme for lexeme in self.lexemes
            if not WORD.fullmatch(lexeme) and not _HYPHENATED.fullmatch(lexeme))

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """Return (start, end, lexeme) of each match in ``text``, in order, none overlapping.

        Looks at the first SCAN_CHARS of the text, for each lexeme at SCAN_STEPS places
        at most, so that no text or query costs more than a few milliseconds.
        """
        text = _scanned(text)
        lowered = text.lower()
        if len(lowered) != len(text):  # a letter whose lower case is longer (İ): rare
            lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        starts = set()
        for prefix in self._prefixes:
            at = lowered.find(prefix)
            steps = SCAN_STEPS
            while at >= 0 and steps:
                steps -= 1
                if not at or not (lowered[at - 1].isalnum() or _inside_a_token(lowered, at)):
                    starts.add(at)
                # A place inside this match follows a letter: it starts no word.
                at = lowered.find(prefix, at + len(prefix))
        found = []
        if starts:
            ordered, ends = [], []
            for at in sorted(starts):
                end = WORD.match(lowered, at).end()  # type: ignore[union-attr]
                # Nor a number's whole part (1.5), nor a path's first part, nor the digits
                # of a signed number (the lexeme of HIV-1's "-1" is "-1").
                digits = lowered[at:end].isdigit()
                if digits and at and lowered[at - 1] == "-":
                    continue
                if not _NOT_A_WORD_AFTER.match(lowered, end) or not (
                        lowered[end] == "/" or digits):
                    ordered.append(at)
                    ends.append(end)
            stems = stems_of([lowered[at:end] for at, end in zip(ordered, ends, strict=True)])
            lexemes = self.lexemes
            found = [(at, end, stem) for at, end, stem in zip(ordered, ends, stems, strict=True)
                     if stem in lexemes]
        if self._literals:
            for literal in self._literals:
                # Whole tokens only: "-3" is not in "-354".
                alnum_first, alnum_last = literal[0].isalnum(), literal[-1].isalnum()
                at = lowered.find(literal)
                steps = SCAN_STEPS
                while at >= 0 and steps:
                    steps -= 1
                    end = at + len(literal)
                    if not (alnum_first and at and lowered[at - 1].isalnum()) and not (
                            alnum_last and end < len(lowered) and lowered[end].isalnum()):
                        found.append((at, end, literal))
                    at = lowered.find(literal, end)
            found.sort()
            merged: list[tuple[int, int, str]] = []
            for match in found:
                if merged and match[0] < merged[-1][1]:
                    start, end, lexeme = merged[-1]
                    merged[-1] = (start, max(end, match[1]), lexeme)
                else:
                    merged.append(match)
            found = merged
        return found

    def snippet(self, text: str) -> str:
        """Return the HTML of ``text``'s passages that best show the query's lexemes,
        each match in ``<mark>``: escaped text and marks, nothing else."""
        # The marks' own characters, should a text hold them, would unbalance the marks.
        text = _scanned(text).replace(_MARK_START, "").replace(_MARK_END, "")
        matches = self.matches(text)
        parts = []
        for start, end in _fragments(text, matches):
            pieces, at = [], start
            for s, e, _ in matches:
                if s >= end or e <= start:
                    continue
                # A match longer than a fragment is marked as far as the fragment shows it.
                s, e = max(s, start), min(e, end)
                pieces += [text[at:s], _MARK_START, text[s:e], _MARK_END]
                at = e
            pieces.append(text[at:end])
            parts.append("".join(pieces))
        return (html.escape(FRAGMENT_DELIMITER.join(parts))
                .replace(_MARK_START, "<mark>").replace(_MARK_END, "</mark>"))


def _inside_a_token(lowered: str, at: int) -> bool:
    """Return whether the place after a separator is still inside a token PostgreSQL's
    parser reads whole: the decimals of a number (1.5), a part of a path (and/or)."""
    before = lowered[at - 1]
    return before == "/" or (before == "." and at > 1 and lowered[at - 2].isdigit()
                             and lowered[at].isdigit())


def _scanned(text: str) -> str:
    """Return the part of ``text`` snippets are made from: its first SCAN_CHARS, less a
    word cut in two at the end."""
    if len(text) <= SCAN_CHARS:
        return text
    cut = text[:SCAN_CHARS]
    if text[SCAN_CHARS].isalnum():
        whole = cut[:len(cut) - len(_LAST_WORD.search(cut).group())]  # type: ignore[union-attr]
        if whole.strip():  # else all of it is one word, shown as far as it goes
            return whole
    return cut


def _window(free: list[tuple[int, int, str]], shown: frozenset[str], cap: int
            ) -> tuple[tuple[int, int, int], int, int]:
    """Return the best window of ``free`` matches, as (score, first match, end match):
    the most lexemes not in ``shown``, then the most lexemes, then the most matches;
    windows span at most FRAGMENT_CHARS and end before ``cap`` if they start before it."""
    counts: dict[str, int] = {}
    new = j = 0
    size = len(free)
    best = ((-1, -1, -1), 0, 1)
    for i in range(size):
        first = free[i][0]
        limit = first + FRAGMENT_CHARS
        if first < cap < limit:
            limit = cap
        while j < size and (j == i or free[j][1] <= limit):
            lexeme = free[j][2]
            seen = counts.get(lexeme, 0)
            counts[lexeme] = seen + 1
            if not seen and lexeme not in shown:
                new += 1
            j += 1
        score = (new, len(counts), j - i)
        if score > best[0]:
            best = (score, i, j)
        lexeme = free[i][2]
        if counts[lexeme] == 1:
            del counts[lexeme]
            if lexeme not in shown:
                new -= 1
        else:
            counts[lexeme] -= 1
    return best


def _fragments(text: str, matches: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Return up to MAX_FRAGMENTS (start, end) of ``text``, in order, none overlapping:
    each the stretch of about FRAGMENT_CHARS holding the most lexemes not shown yet
    (then the most lexemes, then the most matches), its matches centred, cut between
    words."""
    if not matches:
        return [_cut(text, 0, FRAGMENT_CHARS)] if text.strip() else []
    chosen: list[tuple[int, int]] = []
    shown: frozenset[str] = frozenset()
    free = matches
    for _ in range(MAX_FRAGMENTS):
        if chosen:
            low_, high_ = chosen[-1]
            free = [m for m in free if m[1] <= low_ or m[0] >= high_]
        if not free:
            break
        cap = min((s for s, _ in chosen if s > free[0][0]), default=len(text) + 1)
        _, i, j = _window(free, shown, cap)
        first, last = free[i][0], free[j - 1][1]
        # The room the matches leave, shared before and after them (a match longer than a
        # fragment leaves none: the fragment starts with it), within the text and clear of
        # the fragments chosen before.
        low = max((e for _, e in chosen if e <= first), default=0)
        high = min((s for s, _ in chosen if s >= first), default=len(text))
        start = max(low, first - max(0, FRAGMENT_CHARS - (last - first)) // 2)
        end = min(high, start + FRAGMENT_CHARS)
        start = max(low, min(start, end - FRAGMENT_CHARS))
        fragment = _cut(text, start, end, low=low, high=high, keep=(first, min(last, end)))
        if fragment[0] < fragment[1]:
            chosen.append(fragment)
        shown = shown | {lexeme for _, _, lexeme in free[i:j]}
    # Passages with nothing but spaces between them are one.
    merged: list[tuple[int, int]] = []
    for start, end in sorted(chosen):
        if merged and not text[merged[-1][1]:start].strip():
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _cut(text: str, start: int, end: int, *, low: int = 0, high: int | None = None,
         keep: tuple[int, int] | None = None) -> tuple[int, int]:
    """Return ``start``-``end`` moved in to the nearest break between words (never past
    ``keep``, nor further than a long word's worth), without spaces at either end."""
    high = len(text) if high is None else high
    end = min(end, high)
    if start > low and not text[start - 1].isspace() and not text[start].isspace():
        found = _SPACE.search(text, start, min(keep[0] if keep else end, start + _LONG_WORD))
        start = found.end() if found else start
    if end < high and not text[end - 1].isspace() and not text[end].isspace():
        for at in range(end - 1, max(keep[1] if keep else start, end - _LONG_WORD) - 1, -1):
            if text[at].isspace():
                end = at
                break
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
