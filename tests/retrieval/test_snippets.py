"""Snippets: the words search matched are marked, as PostgreSQL would mark them."""

from __future__ import annotations

import re

import pytest
from django.db import connection

from aistack.retrieval.snippets import FRAGMENT_DELIMITER, MAX_WORDS, snippet

pytestmark = pytest.mark.django_db

_MARKED = re.compile(r"<mark>(.*?)</mark>")

TEXTS = [
    ("Running studies: the runners ran while studying how happily geese flew over "
     "the flying boats, and a study of mice (not mouses) followed.", "runner studies happy fly"),
    ("The committee's decisions were decided upon; deciding faster is what committees "
     "want. Generalization of generalized, generally general rules.", "decide committee general"),
    ("Write to HR@example.com about the vacation-days policy, the vacationing staff, "
     "and 25 days off.", "hr@example.com vacation 25"),
    ("Naïve café owners' résumés: über-fast naïveté, the Müller report.",
     "naïve résumé müller café"),
    ("Connection, connections, connected, connecting, connective; argue, argued, "
     "argues, arguing, argus, arguments.", "connect argument"),
]


def lexemes(query: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', %s))",
                       [query])
        return [row[0] for row in cursor.fetchall()]


def postgresql_marked(text: str, query: str) -> list[str]:
    """Return the words ts_headline marks in the whole of ``text`` for ``query``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ts_headline('english', %s, (SELECT string_agg(quote_literal(lexeme), "
            "' | ')::tsquery FROM unnest(to_tsvector('english', %s))), "
            "'HighlightAll=true, StartSel=[, StopSel=]')", [text, query])
        return re.findall(r"\[(.*?)\]", cursor.fetchone()[0])


@pytest.mark.parametrize(("text", "query"), TEXTS)
def test_the_words_marked_are_those_postgresql_marks(text: str, query: str) -> None:
    assert len(text.split()) <= MAX_WORDS  # shown whole
    ours = _MARKED.findall(snippet(text, lexemes(query)))
    assert ours
    theirs = postgresql_marked(text, query)
    # PostgreSQL marks each part of a hyphenated word or an address on its own.
    assert "".join(ours).replace("-", "") == "".join(theirs).replace("-", "")


def test_markup_in_the_text_is_escaped_and_only_marks_are_markup() -> None:
    html = snippet("<b onclick='x'>vacation</b> & <script>alert(1)</script> vacations",
                   lexemes("vacation"))
    assert html == ("&lt;b onclick=&#x27;x&#x27;&gt;<mark>vacation</mark>&lt;/b&gt; &amp; "
                    "&lt;script&gt;alert(1)&lt;/script&gt; <mark>vacations</mark>")


def test_a_long_text_shows_two_passages_covering_the_query_terms_between_them() -> None:
    filler = " ".join(f"filler{n}" for n in range(200))
    text = (f"Incident response starts here. {filler} The on-call engineer pages the team. "
            f"{filler} Rotation ends.")
    html = snippet(text, lexemes("incident engineer"))
    first, second = html.split(FRAGMENT_DELIMITER)
    assert first.startswith("<mark>Incident</mark> response starts here.")
    assert "<mark>engineer</mark>" in second
    for passage in (first, second):
        assert len(passage.split()) <= MAX_WORDS
    # Centred on what it shows: words on both sides of the match.
    before, _, after = second.partition("<mark>engineer</mark>")
    assert len(before.split()) >= 10 and len(after.split()) >= 10


def test_the_second_passage_prefers_a_term_the_first_does_not_show() -> None:
    many = " ".join(["deploy"] * 5)
    filler = " ".join(f"filler{n}" for n in range(60))
    text = f"{many} {filler} deploy deploy deploy {filler} rollback {filler}"
    html = snippet(text, lexemes("deploy rollback"))
    assert html.count(FRAGMENT_DELIMITER) == 1
    assert "<mark>rollback</mark>" in html


def test_without_a_match_the_text_begins_the_snippet() -> None:
    text = " ".join(f"word{n}" for n in range(100))
    assert snippet(text, lexemes("absent")) == " ".join(f"word{n}" for n in range(MAX_WORDS))
    assert snippet("", lexemes("absent")) == ""
    assert snippet("  ...  ", []) == ""
