"""The sentences the built-in extractive model may quote, and which of them summarize a text.

Documents arrive as Markdown, or as text extracted from PDFs and Word files. Quoted as they
stand, they would bring headings, list markers and Markdown syntax into an answer: the
statements here are the prose of the text's paragraphs and list items, as plain sentences.
Choosing a summary's sentences needs their vectors; the model passes them in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from markdown_it import MarkdownIt
from markdown_it.token import Token

from aistack.rendering import citations_inert

# Fragments shorter than this are headings or list debris, not statements to quote.
MIN_STATEMENT_WORDS = 3
# A summary's sentences are whole statements of reasonable length, mostly words.
SUMMARY_MIN_WORDS = 6
SUMMARY_MAX_WORDS = 60
SUMMARY_MIN_LETTER_SHARE = 0.6
SUMMARY_MAX_SYMBOL_SHARE = 0.015
_FURNITURE = re.compile(r"\.\s?\.\s?\.|^Copyright\b|©", re.IGNORECASE)
_CODE_SYMBOLS = frozenset("_*[]{}<>=|\\/#@$^~`")
# About three sentences for a page (up to 600 words), growing with the logarithm of the
# length to eight for a long report (5,000 words and more).
SUMMARY_MIN_SENTENCES = 3
SUMMARY_MAX_SENTENCES = 8
_PAGE_WORDS = 600
_SENTENCES_PER_E_FOLD = 2.35
# Past this many candidates, an even sample of them stands for the whole text: the time a
# summary takes stays bounded for a book.
SUMMARY_MAX_CANDIDATES = 1_500
# TextRank over the sentences' cosine similarities (Mihalcea and Tarau, 2004).
_DAMPING = 0.85
_RANK_ITERATIONS = 50
# How much a sentence's place counts: the first few, or the first tenth, of a long text.
_LEAD_WEIGHT = 0.3
_LEAD_SENTENCES = 3
_LEAD_SHARE = 0.1
# Maximal marginal relevance: how much a sentence's centrality counts against its likeness
# to the sentences already chosen; and a likeness past which it only repeats one of them.
_RELEVANCE_WEIGHT = 0.7
_REPEATS = 0.85

# A sentence ends at ., ! or ? (and any closing quotes or brackets), before the capital,
# digit or opening quote that starts the next; not after the abbreviations below.
# Typographic quotes by code point: the double ones, then the single ones.
_CLOSERS = "\"'\u201d\u2019)\\]"
_OPENERS = "\"'\u201c\u2018(\\["
_SENTENCE_BREAK = re.compile(rf"(?<=[.!?])[{_CLOSERS}]*\s+(?=[{_OPENERS}]?[A-Z0-9])")
_ABBREVIATION = re.compile(
    r"(?:\b(?i:e\.g|i\.e|et al|etc|vs|cf|approx|fig|figs|no|nos|dr|mr|mrs|ms|prof|st|jr"
    r"|sr|inc|ltd|co|corp|eq|ref|vol|pp|ca|resp)\.|\b[A-Z]\.)$"
)
_ENDS_A_STATEMENT = re.compile(rf"[.!?][{_CLOSERS}]*$")
_BULLETS = ("•", "◦", "▪", "‣", "●", "○", "■", "□", "\u2013")  # the last an en dash
_ENUMERATOR = re.compile(r"^(?:[A-Z]|\d{1,2}|[ivx]{1,4})[.)]\s+(?=[A-Z])")
# A line this short that does not end in punctuation is a heading when a capital follows.
_LABEL_MAX_WORDS = 8
_CONTINUES = (".", "!", "?", ",", ";", ":", "-", "(", "\u2014", "\u2013")
_SKIPPED_BLOCKS = frozenset({"heading_open", "th_open", "td_open", "blockquote_open"})


@dataclass(frozen=True)
class Statement:
    """A sentence of one passage of the context, as plain text."""

    passage: int  # numbered from 1, as cited
    text: str


@cache
def _markdown() -> MarkdownIt:
    # Tables are parsed so that their cells can be left out; raw HTML is left out too.
    return MarkdownIt("commonmark").enable("table")


def _lines(inline: Token) -> list[str]:
    """Return an inline run's lines without their Markdown: link text, code as written."""
    lines = [""]
    for child in inline.children or ():
        if child.type in ("text", "code_inline"):
            lines[-1] += child.content
        elif child.type in ("softbreak", "hardbreak"):
            lines.append("")
    return [" ".join(line.split()) for line in lines if line.strip()]


def _label(line: str, following: str | None, *, first: bool) -> bool:
    """Return whether a line of a paragraph is a heading or page header of its own.

    Text extracted from a PDF has no blank line after "2.1 Naming": a short line that ends
    no sentence, before one that starts one. A page starts with its header ("Chapter 4:
    Function reference 14"), wherever its first sentence starts.
    """
    if len(line.split()) > _LABEL_MAX_WORDS or line.endswith(_CONTINUES):
        return False
    return (following is None or following[:1].isupper() or following[:1].isdigit()
            or (first and line[-1:].isdigit()))


def _fragments(lines: list[str]) -> list[str]:
    """Return a paragraph's lines joined into the runs of prose they wrap.

    A bullet (•) or an item's number ("2.", "F.", "iv)") starts a new run and is dropped;
    a heading line is dropped; a word hyphenated across two lines is joined again.
    """
    found: list[str] = []
    run = ""
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else None
        bullet = line[:1] in _BULLETS or bool(_ENUMERATOR.match(line))
        line = _ENUMERATOR.sub("", line.lstrip("".join(_BULLETS)).strip())
        ended = not run or bool(_ENDS_A_STATEMENT.search(run))
        if bullet or (ended and _label(line, following, first=i == 0)):
            found.append(run)
            run = ""
            if not bullet:
                continue  # a heading, not a statement
        if run.endswith("-") and run[-2:-1].isalpha() and line[:1].islower():
            run = run[:-1] + line  # "manip-" "ulation"
        else:
            run = f"{run} {line}" if run else line
    found.append(run)
    return [fragment for fragment in found if fragment]


def _paragraphs(passage: str) -> list[str]:
    """Return the prose of a passage's paragraphs and list items, without the Markdown.

    Headings, table cells, quotations, code and HTML are left out: they are not statements
    the text makes in its own voice.
    """
    found = []
    skipping = 0
    for token in _markdown().parse(passage):
        if token.type in _SKIPPED_BLOCKS:
            skipping += 1
        elif token.type.replace("_close", "_open") in _SKIPPED_BLOCKS and token.nesting < 0:
            skipping -= 1
        elif token.type == "inline" and not skipping:
            found.extend(_fragments(_lines(token)))
    return found


def sentences_split(paragraph: str) -> list[str]:
    """Return a paragraph's sentences."""
    found: list[str] = []
    start = 0
    for end in _SENTENCE_BREAK.finditer(paragraph):
        piece = paragraph[start:end.start()]
        if _ABBREVIATION.search(piece.rstrip(_CLOSERS.replace("\\", ""))):
            continue  # "e.g. Foo" or "J. Smith": the sentence goes on
        found.append(paragraph[start:end.end()].strip())
        start = end.end()
    found.append(paragraph[start:].strip())
    return [sentence for sentence in found if sentence]


def _inert(sentence: str) -> str:
    """Return a quoted sentence that cannot cite or link once the answer is rendered.

    Its Markdown is gone, so an escaped "\\[1\\](https://...)" in the text is now
    "[1](https://...)": it would read as a citation, or a link the document chose.
    """
    return citations_inert(sentence).replace("](", "] (")


def statements(context: Sequence[str]) -> list[Statement]:
    """Return the sentences of ``context`` that could be quoted, each once, in order."""
    seen: set[str] = set()
    found = []
    for number, passage in enumerate(context, start=1):
        for paragraph in _paragraphs(passage):
            for sentence in map(_inert, sentences_split(paragraph)):
                key = sentence.lower()
                # Retrieved chunks overlap, so the same sentence often arrives twice.
                if len(sentence.split()) >= MIN_STATEMENT_WORDS and key not in seen:
                    seen.add(key)
                    found.append(Statement(passage=number, text=sentence))
    return found


def summary_worthy(statement: Statement) -> bool:
    """Return whether a sentence can stand in a summary on its own.

    Not a fragment ("See below:"), not a table of contents' line or a list of numbers, and
    not a paragraph that no full stop ever ended (text extracted from a PDF's layout), not
    code.
    """
    text = statement.text
    words = len(text.split())
    letters = sum(character.isalpha() for character in text)
    visible = sum(not character.isspace() for character in text)
    symbols = sum(character in _CODE_SYMBOLS for character in text)
    return (SUMMARY_MIN_WORDS <= words <= SUMMARY_MAX_WORDS
            and bool(_ENDS_A_STATEMENT.search(text))
            and (text[0].isupper() or text[0].isdigit() or text[0] in "\"'“(")
            and letters >= SUMMARY_MIN_LETTER_SHARE * visible
            # Code, signatures and formulas, not prose.
            and symbols <= max(2, SUMMARY_MAX_SYMBOL_SHARE * visible)
            and text.count("(") == text.count(")")
            # A table of contents' dot leaders; a copyright line: the book's furniture.
            and not _FURNITURE.search(text))


def summary_length(words: int) -> int:
    """Return how many sentences summarize a text of ``words`` words."""
    if words <= _PAGE_WORDS:
        return SUMMARY_MIN_SENTENCES
    grown = SUMMARY_MIN_SENTENCES + _SENTENCES_PER_E_FOLD * math.log(words / _PAGE_WORDS)
    return min(SUMMARY_MAX_SENTENCES, round(grown))


def summary_candidates(found: list[Statement]) -> list[Statement]:
    """Return the sentences a summary may choose from: whole ones, at most an even sample."""
    worthy = [statement for statement in found if summary_worthy(statement)] or found
    if len(worthy) <= SUMMARY_MAX_CANDIDATES:
        return worthy
    step = len(worthy) / SUMMARY_MAX_CANDIDATES
    return [worthy[int(i * step)] for i in range(SUMMARY_MAX_CANDIDATES)]


def _centrality(similarity: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Return TextRank's score of each sentence: how much of the text is like it."""
    weights = np.clip(similarity, 0.0, None).astype(np.float64)
    np.fill_diagonal(weights, 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    # A sentence like no other votes for every sentence equally.
    transition = np.divide(weights, totals, out=np.full_like(weights, 1 / len(weights)),
                           where=totals > 0)
    rank = np.full(len(weights), 1 / len(weights))
    for _ in range(_RANK_ITERATIONS):
        rank = (1 - _DAMPING) / len(weights) + _DAMPING * (transition.T @ rank)
    return rank


def summary_choose(vectors: npt.NDArray[np.float32], count: int) -> list[int]:
    """Return the positions of the ``count`` sentences that best cover the text, in order.

    ``vectors`` are the candidates' unit-length vectors, in the text's order. The sentence
    most central to the text (and nearest its start) comes first; each next one trades
    centrality against likeness to those already chosen (maximal marginal relevance), and
    a near repeat of one chosen is never taken.
    """
    similarity = vectors @ vectors.T
    rank = _centrality(similarity)
    # Texts tend to say what they are about first: an introduction, an abstract's opening.
    position = np.arange(len(vectors))
    lead = np.exp(-position / max(_LEAD_SENTENCES, len(vectors) * _LEAD_SHARE))
    relevance = (1 - _LEAD_WEIGHT) * rank / rank.max() + _LEAD_WEIGHT * lead
    chosen: list[int] = []
    while len(chosen) < min(count, len(vectors)):
        likeness = (similarity[:, chosen].max(axis=1) if chosen
                    else np.zeros(len(vectors), dtype=np.float32))
        score = _RELEVANCE_WEIGHT * relevance - (1 - _RELEVANCE_WEIGHT) * likeness
        score[chosen] = -np.inf
        score[likeness > _REPEATS] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        chosen.append(best)
    return sorted(chosen)


def cited(found: Sequence[Statement]) -> list[str]:
    """Return the sentences with their passage's number after the last one quoted from it."""
    pieces = []
    for i, statement in enumerate(found):
        last_of_passage = i + 1 == len(found) or found[i + 1].passage != statement.passage
        pieces.append(f"{statement.text} [{statement.passage}]" if last_of_passage
                      else statement.text)
    return pieces
