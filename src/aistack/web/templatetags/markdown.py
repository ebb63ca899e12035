"""``{{ text|markdown }}``: Markdown rendered and sanitized (see ``aistack.rendering``)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from aistack.rendering import markdown_html

register = template.Library()


@register.filter
def markdown(text: str | None) -> SafeString:
    """Return ``text`` as sanitized HTML, its headings under the section's own."""
    # Safe: nh3 has removed everything but rendered Markdown's own tags.
    return mark_safe(markdown_html(text or ""))  # noqa: S308
