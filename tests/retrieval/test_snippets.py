"""Snippets: the words PostgreSQL's text search matched, marked in the passages that
show the most of them, as safe HTML."""

from __future__ import annotations

import random
import re
import time

import pytest
from django.db import connection

from aistack.retrieval.snippets import FRAGMENT_CHARS, FRAGMENT_DELIMITER, Matcher

pytestmark = pytest.mark.django_db

# Inflected forms, stop words, numbers, hyphenated and mixed words, and punctuation.
WORDS = [
    "study", "studies", "studied", "studying", "hope", "hoping", "hoped", "die", "dying",
    "lie", "lying", "run", "running", "runs", "cell", "cells", "T-cell", "T-cells", "IL-8",
    "cancer", "cancers", "cancerous", "patient", "patients", "patient's", "treated",
    "treatment", "treatments", "the", "of", "and", "in", "was", "were", "not", "2.5",
    "1,000", "3", "CD4", "vitamin", "vitamins", "happy", "happily", "happiness", "sky",
    "skies", "generous", "generously", "early", "only", "relational", "relation",
    "activation", "active", "actively", "news", "(mice)", "mouse", "mice.", "growth",
    "grows", "growing", "e-mail", "naïve", "Über", "résumé",
]


def lexemes_of(query: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(array_agg(DISTINCT u.lexeme), '{}') "
                       "FROM unnest(to_tsvector('english', %s)) u", [query])
        return list(cursor.fetchone()[0])


def marked_by_postgresql(text: str, query: str) -> list[str]:
    """The words ts_headline marks when it marks every match in the text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ts_headline('english', %s, (SELECT coalesce(string_agg("
            "quote_literal(u.lexeme), ' | '), '')::tsquery FROM unnest(to_tsvector("
            "'english', %s)) u), 'HighlightAll=true, StartSel=<<, StopSel=>>')",
            [text, query])
        return [word.lower() for word in re.findall(r"<<(.*?)>>", cursor.fetchone()[0])]


def marked(snippet: str) -> list[str]:
    return [word.lower() for word in re.findall(r"<mark>(.*?)</mark>", snippet)]


def test_the_words_marked_are_those_postgresql_matches() -> None:
    rng = random.Random(3)
    chosen = [("He was dying, they were lying", "die lie"),
              ("IL-8 and T-cells; IL-8-driven growth", "IL-8 t-cell"),
              ("1,000 patients took 2.5 mg, 3 of 1,000 twice", "2.5 1,000 3 patients"),
              ("p = 0.05 in 14.5% of the stage/severity scores, stage 2", "0 14 5 stage 2 score"),
              ("HIV-1 and IL-12, type 1 of BMS-354825 and PD-1", "1 -1 -3 hiv type")]
    random_ones = [(" ".join(rng.choices(WORDS, k=rng.randint(5, 40))),
                    " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))) for _ in range(100)]
    found = set()
    for text, query in chosen + random_ones:
        matcher = Matcher(lexemes_of(query))

        ours = [text[start:end].lower() for start, end, _ in matcher.matches(text)]

        assert ours == marked_by_postgresql(text, query), (text, query)
        found.update(ours)

    # Inflections, hyphenated words and numbers among them.
    assert {"studies", "dying", "hoping", "cells", "il", "-8", "2.5", "000", "stage", "2",
            "scores", "-1", "1"} <= found


def test_a_snippet_is_escaped_text_and_marks_only() -> None:
    text = 'Patients <script>alert("x")</script> & their treatment\'s <b>cost</b>'

    snippet = Matcher(lexemes_of("patient treatment costs")).snippet(text)

    assert snippet == ("<mark>Patients</mark> &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
                       " &amp; their <mark>treatment</mark>&#x27;s &lt;b&gt;<mark>cost</mark>"
                       "&lt;/b&gt;")


def test_distant_matches_make_two_passages_of_whole_words() -> None:
    filler = " ".join(["lorem ipsum dolor sit amet"] * 40)
    text = f"Mice were studied first. {filler} Late in the text vitamins appear. {filler}"

    snippet = Matcher(lexemes_of("vitamin study in mice")).snippet(text)

    first, second = snippet.split(FRAGMENT_DELIMITER)
    assert marked(first) == ["mice", "studied"] and marked(second) == ["vitamins"]
    for passage in (first, second):
        plain = re.sub(r"</?mark>", "", passage)
        assert len(plain) <= FRAGMENT_CHARS and plain in text
        # Cut between words, not inside them.
        assert not plain.startswith(("orem", "psum", "olor", "it ", "met"))
        assert plain.endswith(("lorem", "ipsum", "dolor", "sit", "amet", "appear."))


def test_a_chunk_without_the_query_words_shows_its_beginning() -> None:
    text = "The quarterly report covers revenue. " * 20

    snippet = Matcher(lexemes_of("vacation policy")).snippet(text)

    assert "<mark>" not in snippet and text.startswith(snippet)
    assert FRAGMENT_CHARS - 40 < len(snippet) <= FRAGMENT_CHARS


def test_letters_whose_lower_case_is_longer_do_not_shift_the_marks() -> None:
    text = "İstanbul İzmir: the study of cells in İzmir"

    snippet = Matcher(lexemes_of("studies of cell")).snippet(text)

    assert snippet == "İstanbul İzmir: the <mark>study</mark> of <mark>cells</mark> in İzmir"


def test_nothing_to_show_is_an_empty_snippet() -> None:
    assert Matcher(lexemes_of("anything")).snippet("") == ""
    assert Matcher([]).snippet("   ") == ""


def test_a_match_longer_than_a_passage_is_marked_as_far_as_shown_and_nothing_overlaps() -> None:
    path = "/" + "/".join(f"s{n}" for n in range(80))
    text = f"see x.org{path} and the cancers, then vitamins at the end"
    matcher = Matcher(lexemes_of(f"x.org{path} cancer vitamin"))

    snippet = matcher.snippet(text)

    assert snippet.startswith("<mark>") and "<mark>cancers</mark>" in snippet
    assert "<mark>vitamins</mark>" in snippet
    plain = re.sub(r"</?mark>", "", snippet).split(FRAGMENT_DELIMITER)
    # Each passage once, in order: none repeats a stretch of another.
    at = 0
    for passage in plain:
        at = text.index(passage, at) + len(passage)


def test_passages_are_cut_between_words_whatever_the_whitespace() -> None:
    words = [f"introduction{n}" for n in range(30)]
    for gap in ("\n", "\t"):
        text = gap.join(words) + " vitamins " + gap.join(words)

        snippet = Matcher(lexemes_of("vitamins")).snippet(text)

        plain = snippet.replace("<mark>", "").replace("</mark>", "")
        assert "<mark>vitamins</mark>" in snippet and len(plain) > FRAGMENT_CHARS / 2
        assert all(word in words or word == "vitamins" for word in plain.split())


def test_the_marks_own_characters_in_a_text_are_dropped() -> None:
    assert Matcher(lexemes_of("cell")).snippet("cells \x02 here \x03x") == (
        "<mark>cells</mark>  here x")


def test_a_text_or_query_built_to_be_slow_is_not() -> None:
    # Every prefix of the query's lexemes occurs at every place of the text.
    runs = " ".join("a" * n for n in range(2, 63))
    started = time.perf_counter()

    snippet = Matcher(lexemes_of(runs)).snippet("a" * 200_000)
    digits = Matcher(lexemes_of(" ".join("0" * n for n in range(1, 60)))).snippet("0" * 50_000)

    # It took seconds when every place a lexeme's prefix occurs was looked at.
    assert time.perf_counter() - started < 1
    assert "<mark>" not in snippet and snippet == "a" * FRAGMENT_CHARS
    assert len(digits) <= FRAGMENT_CHARS


def test_a_common_short_lexeme_leaves_the_others_their_marks() -> None:
    text = "AI regulation at -8 degrees. " + "we see a team " * 1500

    snippet = Matcher(lexemes_of("AI regulation -8")).snippet(text)

    assert marked(snippet)[:3] == ["ai", "regulation", "-8"]


def test_passages_with_nothing_between_them_are_one() -> None:
    text = "cell " + "w " * 96 + "studies-abcdefghijklmnopqrstuvwxyz0123456789 cells"

    snippet = Matcher(lexemes_of("cell studies")).snippet(text)

    assert FRAGMENT_DELIMITER not in snippet
    assert re.sub(r"</?mark>", "", snippet) == text


def test_an_empty_lexeme_or_a_word_cut_at_the_end_of_what_is_read_is_no_match() -> None:
    assert Matcher(["", "cell"]).snippet("cells") == "<mark>cells</mark>"
    # The text is read to SCAN_CHARS: "cellular" would be cut to a word stemming to "cell".
    text = "x " * 9_998 + "cellular"
    assert "<mark>" not in Matcher(["cell"]).snippet(text)
