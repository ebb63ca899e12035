"""Input rules shared by the API's schemas and the services."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator

# Control characters other than tab and line breaks: they carry no text, and they break
# what is made of it (search highlights are delimited by such characters).
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_controls(value: str) -> str:
    """Return ``value`` without control characters but tab and line breaks."""
    return _CONTROL.sub("", value)


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows "\ud800" alone; no text does, and nothing downstream can encode it.
        raise ValueError("must be valid Unicode text: it contains a lone surrogate "
                         "(\\ud800-\\udfff)") from None
    return without_controls(value)


Text = Annotated[str, AfterValidator(_storable)]
"""A string that can be stored in and searched by PostgreSQL: valid Unicode, no NUL,
and no control characters but tab and line breaks (those are removed)."""


def one_line_title(value: str) -> str:
    """Return a title on one line, without the invisible: format characters and controls.

    Format characters (bidi overrides such as U+202E, zero-width spaces and joiners)
    show as nothing, or reorder what follows: a title of them alone is an invisible
    link, and one with them can read as another name.
    """
    visible = "".join(c for c in value
                      if c.isspace() or unicodedata.category(c) not in {"Cf", "Cc"})
    return " ".join(visible.split())
