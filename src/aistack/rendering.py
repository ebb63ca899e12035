"""Markdown as pages show it: rendered by markdown-it, then sanitized by nh3.

Documents, summaries, answers and chat replies are Markdown (or plain text, which reads
the same). Whatever they contain, what reaches a page is the sanitizer's output: the
tags of rendered Markdown only, links to http(s) and mailto alone, each marked
``rel="noopener nofollow"``. Raw HTML in the text is shown as text, never interpreted.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import nh3
from django.core.cache import cache as django_cache
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token

from aistack.cache import REDIS_UNREACHABLE

# What rendered Markdown produces; images become links to them (see ``_image_link``).
ALLOWED_TAGS = frozenset({
    "a", "blockquote", "br", "code", "del", "em", "h2", "h3", "h4", "h5", "h6", "hr", "li",
    "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
})
ALLOWED_ATTRIBUTES = {"a": {"href", "title", "class", "aria-label"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener nofollow"
# A rendered document is kept this long, by its content's hash and the renderer's version.
DOCUMENT_CACHE_SECONDS = 24 * 3600
RENDERER_VERSION = 2
# Longer texts are shown as written, in paragraphs (see ``_rendered``).
MARKDOWN_MAX_CHARS = 200_000
# Where a link may go: the web, mail, or an anchor in the page. Not a relative path, nor
# "//host", which leaves the site.
_LINK_TARGETS = ("https://", "http://", "mailto:", "#")
# A citation of source n in an answer: "[n]".
CITATION = re.compile(r"\[(\d+)\]")


@cache
def _markdown(*, references: bool = True) -> MarkdownIt:
    # Raw HTML is not parsed as HTML (it stays text); a line break in the text is one on
    # the page, as text extracted from a PDF or typed into a form expects.
    parser = MarkdownIt("commonmark", {"html": False, "breaks": True})
    parser.enable(["table", "strikethrough"])
    if not references:
        # In a text that cites, "[1]: https://..." would make [1] a link elsewhere.
        parser.disable("reference")
    parser.add_render_rule("image", _image_link)
    return parser


def _image_link(self: Any, tokens: Sequence[Token], index: int, options: Any, env: Any) -> str:
    """Render an image as a link to it: a page never loads a document's remote images."""
    token = tokens[index]
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    return f'<a href="{escapeHtml(str(token.attrGet("src") or ""))}">{escapeHtml(alt)}</a>'


def _headings_shifted(tokens: list[Token], below: int) -> None:
    """Make a text's headings sit under the page's own: # becomes h``below``, and so on."""
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + below - 1)}"


def _citations_linked(tokens: list[Token], cited: frozenset[int], prefix: str) -> None:
    """Make each [n] of a cited source n, in the text itself, a link to ``#{prefix}{n}``.

    Only in text: not in code, a link's text or any attribute.
    """
    for block in tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        in_link = 0
        for child in _citation_links_unwrapped(block.children):
            in_link += {"link_open": 1, "link_close": -1}.get(child.type, 0)
            if child.type != "text" or in_link or not CITATION.search(child.content):
                children.append(child)
                continue
            for n, piece in enumerate(CITATION.split(child.content)):
                if n % 2 == 0:
                    if piece:
                        children.append(Token("text", "", 0, content=piece))
                elif int(piece) in cited:
                    children.append(Token(
                        "html_inline", "", 0,
                        content=f'<a class="cite" href="#{escapeHtml(prefix)}{int(piece)}" '
                                f'aria-label="source {int(piece)}">[{int(piece)}]</a>'))
                else:
                    children.append(Token("text", "", 0, content=f"[{piece}]"))
        block.children = children


def _citation_links_unwrapped(children: list[Token]) -> list[Token]:
    """Return inline tokens where a link whose whole text is "[n]" is that text alone.

    "[[1]](https://elsewhere)" would show a citation that leads off the site.
    """
    found: list[Token] = []
    i = 0
    while i < len(children):
        window = children[i:i + 3]
        if ([token.type for token in window] == ["link_open", "text", "link_close"]
                and CITATION.fullmatch(window[1].content)):
            found.append(window[1])
            i += 3
        else:
            found.append(children[i])
            i += 1
    return found


def _link_allowed(element: str, attribute: str, value: str) -> str | None:
    """Keep a link only to the web, to mail, or within the page (a citation)."""
    if element == "a" and attribute == "href" and not value.startswith(_LINK_TARGETS):
        return None
    return value


def _rendered(text: str, *, cited: frozenset[int], cite_prefix: str, headings_from: int) -> str:
    if len(text) > MARKDOWN_MAX_CHARS:
        # Markdown takes time in proportion to markup (a wide table: 25 µs a character):
        # a text this long is shown as it is written.
        paragraphs = (escapeHtml(p).replace("\n", "<br>\n") for p in text.split("\n\n"))
        return "".join(f"<p>{p}</p>\n" for p in paragraphs if p.strip())
    parser = _markdown(references=not cited)
    tokens = parser.parse(text)
    _headings_shifted(tokens, headings_from)
    if cited:
        _citations_linked(tokens, cited, cite_prefix)
    html = parser.renderer.render(tokens, parser.options, {})
    return nh3.clean(html, tags=set(ALLOWED_TAGS), attributes=ALLOWED_ATTRIBUTES,
                     url_schemes=set(URL_SCHEMES), link_rel=LINK_REL,
                     attribute_filter=_link_allowed)


# Summaries and answers are read far more often than written: each is rendered once.
@lru_cache(maxsize=2048)
def markdown_html(text: str, *, cited: frozenset[int] = frozenset(), cite_prefix: str = "",
                  headings_from: int = 4) -> str:
    """Return ``text`` rendered from Markdown and sanitized, ready to put in a page.

    Its headings start at ``headings_from`` (h4 by default: under a section's heading).
    Each [n] for n in ``cited`` links to the element ``#{cite_prefix}{n}``.
    """
    return _rendered(text, cited=cited, cite_prefix=cite_prefix, headings_from=headings_from)


def document_html(*, content: str, content_hash: str) -> str:
    """Return a document's content rendered, from the cache while its content is unchanged.

    A long document takes a good part of a second to render: it is rendered once per
    version, not on every view (nor kept in every process's memory).
    """
    key = f"document-html:{RENDERER_VERSION}:{content_hash}"
    try:
        found = django_cache.get(key)
    except REDIS_UNREACHABLE:
        found = None
    if found is None:
        found = _rendered(content, cited=frozenset(), cite_prefix="", headings_from=2)
        with contextlib.suppress(*REDIS_UNREACHABLE):
            django_cache.set(key, found, timeout=DOCUMENT_CACHE_SECONDS)
    return str(found)


def markdown_text(text: str) -> str:
    """Return ``text`` as the plain words a page shows of it: no Markdown, one line."""
    words = nh3.clean(_markdown().render(text), tags=set())
    return " ".join(html.unescape(words).split())


def citations_inert(text: str) -> str:
    """Return ``text`` with its own "[n]" written "(n)": they can never read as citations.

    A document may contain "[2][3]"; quoted in an answer, they would cite whatever the
    prompt numbered 2 and 3. Only the answer's own markers may cite.
    """
    return CITATION.sub(r"(\1)", text)
