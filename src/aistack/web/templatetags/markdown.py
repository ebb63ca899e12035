"""``{{ text|markdown }}``: Markdown rendered and sanitized (see ``aistack.rendering``)."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import linebreaksbr
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from aistack.documents.models import Document
from aistack.rendering import MARKDOWN_MAX_CHARS, markdown_html

register = template.Library()


@register.filter
def markdown(text: str | None) -> SafeString:
    """Return ``text`` as sanitized HTML, its headings under the section's own."""
    # Safe: nh3 has removed everything but rendered Markdown's own tags.
    return mark_safe(markdown_html(text or ""))  # noqa: S308


@register.filter
def passage(text: str, document: Document) -> SafeString:
    """Return a passage of ``document`` rendered like the document: as Markdown, unless the
    document is too long for that (then as written)."""
    if len(document.content) > MARKDOWN_MAX_CHARS:
        return SafeString(f"<p>{linebreaksbr(escape(text))}</p>")
    return markdown(text)
