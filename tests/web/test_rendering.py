"""Markdown as pages show it: what survives the sanitizer, and where citations link."""

from __future__ import annotations

import re

import pytest

from aistack.rendering import MARKDOWN_MAX_CHARS, markdown_html, markdown_text

CITED = frozenset({1})


def cites(html: str) -> list[str]:
    return re.findall(r'<a class="cite" href="([^"]*)"', html)


@pytest.mark.parametrize("text", [
    '[a link](http://a.example "[1] in its title")',   # an attribute
    "`[1]` in code",                                   # code
    "[1]\n\n[1]: https://evil.example/",              # a reference definition
    "[[1]](https://evil.example/)",                    # a link's own text
])
def test_a_citation_links_only_where_the_text_itself_says_it(text: str) -> None:
    html = markdown_html(text, cited=CITED, cite_prefix="citation-")

    assert all(href == "#citation-1" for href in cites(html))
    # No "[1]" that leads off the site, and none made of code or an attribute.
    assert not re.search(r'<a [^>]*href="https?://[^>]*>\[1\]</a>', html), html
    assert not re.search(r'<code>[^<]*class="cite"|title="[^"]*<a', html), html


def test_cited_numbers_link_and_others_stay_text() -> None:
    html = markdown_html("Deploys are on **Tuesdays** [1][2].", cited=CITED,
                         cite_prefix="turn-7-source-")

    assert cites(html) == ["#turn-7-source-1"]
    assert "[2]" in html and "<strong>Tuesdays</strong>" in html


@pytest.mark.parametrize(("link", "kept"), [
    ("https://example.com/a", True), ("mailto:team@example.com", True), ("#section", True),
    ("//evil.example/", False), ("/relative/path", False), ("javascript:alert(1)", False),
    ("JaVaScRiPt:alert(1)", False), ("data:text/html,<script>x</script>", False),
])
def test_links_go_to_the_web_to_mail_or_within_the_page_only(link: str, kept: bool) -> None:
    html = markdown_html(f"[go]({link})")

    assert ("href=" in html) is kept, html
    assert "<script" not in html


def test_raw_html_and_images_never_reach_the_page() -> None:
    html = markdown_html('<img src=x onerror=alert(1)> <script>alert(2)</script>\n\n'
                         '![pixel](https://tracker.example/p.gif "t")')

    assert "<img" not in html and "<script" not in html
    assert "&lt;script&gt;" in html
    assert '<a href="https://tracker.example/p.gif" rel="noopener nofollow">pixel</a>' in html


def test_a_very_long_text_is_shown_as_written() -> None:
    text = "| a | b |\n|---|---|\n" + "| **x** | y |\n" * (MARKDOWN_MAX_CHARS // 10)

    html = markdown_html(text)

    assert "<table>" not in html and "<strong>" not in html and "**x**" in html


def test_plain_text_of_markdown() -> None:
    assert markdown_text("# Guide\n\nIn your **first week** & <b>x</b> [h](https://x)") == (
        "Guide In your first week & <b>x</b> h")


def test_the_passages_of_a_very_long_document_are_shown_as_written_too() -> None:
    from aistack.documents.models import Document
    from aistack.web.templatetags.markdown import passage

    long = Document(content="x" * (MARKDOWN_MAX_CHARS + 1))
    short = Document(content="**b** <i>")

    assert passage("**b** <i>\nnext", long) == "<p>**b** &lt;i&gt;<br>next</p>"
    assert "<strong>b</strong> &lt;i&gt;" in passage("**b** <i>", short)
