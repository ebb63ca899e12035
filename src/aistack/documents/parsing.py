"""Turn an uploaded file's bytes into plain text, safely.

Uploads are untrusted: a file may lie about its type, be truncated, or be built to
exhaust memory (a zip bomb inside a .docx) or the stack (HTML nested 100,000 deep).
:func:`detect_kind` decides what a file really is from its leading bytes, its name and
its declared MIME type; :func:`parse` extracts its text with a maintained library per
format. Every failure is a :class:`ParseError` whose message an end user can read, so
the caller can mark the document ``failed`` with that reason, or answer 415 for an
:class:`UnsupportedFileType` at upload time.

A document's title is its first real heading, else a meaningful title from the file's
metadata (tools fill in "Untitled" or "Microsoft Word - report.docx" by themselves),
else its file name without the extension (:func:`title_from_name`).

This module needs neither Django nor a database.
"""

from __future__ import annotations

import codecs
import io
import itertools
import math
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final, TypeVar, cast

from aistack.validation import one_line_title

# Each format's library is imported by the function that reads that format: a process
# that never parses a file (a search from the terminal) does not load them.
if TYPE_CHECKING:
    from bs4 import Tag
    from docx.document import Document
    from docx.styles.style import ParagraphStyle
    from docx.table import Table
    from markdown_it import MarkdownIt
    from pypdf import PageObject

__all__ = [
    "SNIFF_BYTES",
    "SUPPORTED_TYPES",
    "CorruptFile",
    "DocumentTooLarge",
    "EmptyDocument",
    "FileType",
    "Kind",
    "ParseError",
    "ParsedText",
    "UnsupportedFileType",
    "detect_kind",
    "parse",
    "title_from_name",
]


class Kind(StrEnum):
    TXT = "txt"
    MD = "md"
    HTML = "html"
    PDF = "pdf"
    DOCX = "docx"


@dataclass(frozen=True, kw_only=True, slots=True)
class FileType:
    kind: Kind
    name: str
    extensions: tuple[str, ...]
    mime_types: tuple[str, ...]


SUPPORTED_TYPES: Final[Mapping[Kind, FileType]] = MappingProxyType(
    {
        Kind.TXT: FileType(
            kind=Kind.TXT,
            name="plain text",
            extensions=(".txt", ".text"),
            mime_types=("text/plain",),
        ),
        Kind.MD: FileType(
            kind=Kind.MD,
            name="Markdown",
            extensions=(".md", ".markdown"),
            mime_types=("text/markdown", "text/x-markdown"),
        ),
        Kind.HTML: FileType(
            kind=Kind.HTML,
            name="HTML",
            extensions=(".html", ".htm", ".xhtml"),
            mime_types=("text/html", "application/xhtml+xml"),
        ),
        Kind.PDF: FileType(
            kind=Kind.PDF, name="PDF", extensions=(".pdf",), mime_types=("application/pdf",)
        ),
        Kind.DOCX: FileType(
            kind=Kind.DOCX,
            name="Word",
            extensions=(".docx",),
            mime_types=("application/vnd.openxmlformats-officedocument.wordprocessingml.document",),
        ),
    }
)

# How many leading bytes of a file detect_kind() should be given.
SNIFF_BYTES: Final = 8192


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedText:
    text: str
    # The first real heading, else a meaningful metadata title; None when the file has
    # neither, and its name should title it.
    title: str | None
    pages: int | None = None


class ParseError(Exception):
    """The file could not be read."""

    code: ClassVar[str] = "parse_error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)


class UnsupportedFileType(ParseError):
    """This file type is not supported."""

    code = "unsupported_file_type"


class EmptyDocument(ParseError):
    """The file contains no text."""

    code = "empty_document"


class CorruptFile(ParseError):
    """The file is damaged or incomplete and cannot be read."""

    code = "corrupt_file"


class DocumentTooLarge(ParseError):
    """The document is too large to process."""

    code = "document_too_large"


def detect_kind(*, filename: str, content_type: str | None, head: bytes) -> Kind:
    """Decide which supported kind a file is, trusting its content over its name and MIME type.

    ``head`` is the file's first :data:`SNIFF_BYTES` bytes (or all of it, if shorter).
    """
    label = _Label.of(filename=filename, content_type=content_type)
    # The PDF specification lets the header start anywhere in the first 1024 bytes.
    if _PDF_MAGIC in head[:1024]:
        return Kind.PDF
    if head.startswith(_ZIP_MAGIC):
        return _detect_zip(head=head, label=label)
    text = _decode_text(head, final=False)
    if text is None:
        raise _unsupported(_describe_binary(head))
    if _HTML_START.match(text):
        return Kind.HTML
    if label.kind in (Kind.TXT, Kind.MD, Kind.HTML):
        return label.kind
    if label.kind is not None:
        # Named .pdf or .docx but plainly text: the content wins.
        return Kind.TXT
    if label.foreign is not None:
        raise _unsupported(label.foreign)
    return Kind.TXT


def parse(*, data: bytes, kind: str, max_chars: int) -> ParsedText:
    """Extract the text, and the title if the format has one, from a file of the given kind."""
    try:
        file_kind = Kind(kind)
    except ValueError:
        raise _unsupported(repr(kind)) from None
    if not data or data.isspace():
        raise EmptyDocument
    extracted = _PARSERS[file_kind](data, max_chars)
    text = _normalize(extracted.text)
    if not text.strip():
        if file_kind is Kind.PDF:
            raise EmptyDocument(
                "The file contains no text. If it is a scanned document, run it through "
                "text recognition (OCR) first."
            )
        raise EmptyDocument
    if len(text) > max_chars:
        raise _too_large(max_chars)
    title = _clean_title(extracted.heading) or _meaningful(_clean_title(extracted.metadata_title))
    return ParsedText(text=text, title=title, pages=extracted.pages)


def title_from_name(filename: str) -> str:
    """Return the title a file's name gives it: the name without its folders or extension."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return _clean_title(PurePosixPath(name).stem) or name or filename


# --- Detection -------------------------------------------------------------------------------

_PDF_MAGIC: Final = b"%PDF-"
_ZIP_MAGIC: Final = b"PK\x03\x04"

_EXTENSION_KINDS: Final = {ext: t.kind for t in SUPPORTED_TYPES.values() for ext in t.extensions}
_MIME_KINDS: Final = {mime: t.kind for t in SUPPORTED_TYPES.values() for mime in t.mime_types}
# MIME types that say nothing about the content; browsers send them for unknown extensions.
_UNINFORMATIVE_MIME_TYPES: Final = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
)

_HTML_START: Final = re.compile(
    r"\A(?:\s|<!--.*?-->|<\?xml[^>]*>)*<(?:!doctype\s+html|html|head|body)[\s>]",
    re.IGNORECASE | re.DOTALL,
)

# Leading bytes of common formats we do not accept, only to name them in the error message.
_BINARY_SIGNATURES: Final = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Microsoft Office file (.doc, .xls, .ppt)"),
    (b"\x7fELF", "executable program"),
    (b"MZ", "Windows executable program"),
    (b"\xcf\xfa\xed\xfe", "executable program"),
    (b"\xca\xfe\xba\xbe", "executable program"),
    (b"\x1f\x8b", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"(\xb5/\xfd", "zstd archive"),
    (b"7z\xbc\xaf'\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"OggS", "Ogg audio or video"),
    (b"ID3", "MP3 audio"),
    (b"RIFF", "RIFF audio, video or image"),
)
# Office Open XML and OpenDocument formats other than Word: also ZIP archives.
_OTHER_ZIP_FORMATS: Final = (
    (b"xl/", "Excel workbook (.xlsx)"),
    (b"ppt/", "PowerPoint presentation (.pptx)"),
    (b"mimetypeapplication/vnd.oasis.opendocument", "OpenDocument file (.odt, .ods, .odp)"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Label:
    """What a file's name and declared MIME type claim it is."""

    kind: Kind | None
    # How to name the unsupported type the label claims, e.g. "'.csv' file".
    foreign: str | None

    @classmethod
    def of(cls, *, filename: str, content_type: str | None) -> _Label:
        extension = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        kind = _EXTENSION_KINDS.get(extension) or _MIME_KINDS.get(mime)
        if kind is not None:
            return cls(kind=kind, foreign=None)
        if extension:
            return cls(kind=None, foreign=f"'{extension}' file")
        if mime not in _UNINFORMATIVE_MIME_TYPES:
            return cls(kind=None, foreign=mime)
        return cls(kind=None, foreign=None)


def _detect_zip(*, head: bytes, label: _Label) -> Kind:
    # Part names are stored uncompressed in each entry's local header, and Word writes its
    # word/ parts early in the archive.
    if b"word/" in head:
        return Kind.DOCX
    for marker, description in _OTHER_ZIP_FORMATS:
        if marker in head:
            raise _unsupported(description)
    if label.kind is Kind.DOCX:
        # The word/ parts may start past the head; parse() checks the whole archive.
        return Kind.DOCX
    raise _unsupported("ZIP archive")


def _describe_binary(head: bytes) -> str:
    for signature, description in _BINARY_SIGNATURES:
        if head.startswith(signature):
            return description
    if head[4:8] == b"ftyp":
        return "MP4, QuickTime or HEIC media file"
    return "binary data"


def _unsupported(what: str) -> UnsupportedFileType:
    accepted = ", ".join(f"{t.name} ({t.extensions[0]})" for t in SUPPORTED_TYPES.values())
    return UnsupportedFileType(f"Unsupported file type: {what}. Accepted types: {accepted}.")


def _too_large(max_chars: int) -> DocumentTooLarge:
    # Parsing the same file again fails the same way: say what to do instead.
    return DocumentTooLarge(
        f"The document has more than {max_chars:,} characters of text, the most we accept. "
        "Split it into smaller files and upload those."
    )


# --- Text ------------------------------------------------------------------------------------

# Checked longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in text; whitespace controls are allowed.
_BINARY_CHARACTERS: Final = frozenset(
    chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F)
)
_DROP_BINARY_CHARACTERS: Final = str.maketrans(dict.fromkeys(_BINARY_CHARACTERS))
# A few stray NULs (a log padded after a crash) are still text; real binary data is
# around 10% control characters.
_MAX_BINARY_CHARACTER_RATIO: Final = 0.01


def _decode_text(data: bytes, *, final: bool) -> str | None:
    """Decode bytes as text, or return None if they are not text.

    With ``final=False`` the data is a file's head and may end in the middle of a character.
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            text = _decode(data, encoding=encoding, final=final)
            return text if text is not None and _is_text(text) else None
    text = _decode(data, encoding="utf-8", final=final)
    if text is not None and _is_text(text):
        return text
    # Without a byte order mark, NUL bytes mean binary data: the detector would happily
    # read a short run of them as UTF-16.
    if b"\x00" in data:
        return None
    # Not UTF-8: a legacy encoding, or UTF-16 without a byte order mark.
    # A head may end inside a multi-byte character, which the detector counts against
    # every encoding that has it: retry without the last one to three bytes.
    import charset_normalizer

    for cut in (0,) if final else (0, 1, 2, 3):
        match = charset_normalizer.from_bytes(data[: len(data) - cut]).best()
        if match is not None:
            text = str(match)
            return text if _is_text(text) else None
    return None


def _decode(data: bytes, *, encoding: str, final: bool) -> str | None:
    try:
        return codecs.getincrementaldecoder(encoding)().decode(data, final=final)
    except UnicodeDecodeError:
        return None


def _is_text(text: str) -> bool:
    binary = len(text) - len(text.translate(_DROP_BINARY_CHARACTERS))
    return binary <= len(text) * _MAX_BINARY_CHARACTER_RATIO


# Line and paragraph separators become newlines; other control characters (NUL among them)
# and stray byte order marks go.
_CLEANUP: Final = str.maketrans(
    {
        **dict.fromkeys(_BINARY_CHARACTERS),
        **dict.fromkeys(chr(c) for c in range(0x80, 0xA0)),
        "\r": "\n",
        "\v": "\n",
        "\f": "\n\n",
        "\x85": "\n",
        "\u2028": "\n",
        "\u2029": "\n\n",
        "\ufeff": None,
    }
)
_BLANK_LINES: Final = re.compile(r"\n{3,}")


def _normalize(text: str) -> str:
    """Tidy extracted text, keeping paragraph breaks as single blank lines for the chunker."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").translate(_CLEANUP))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


# --- Titles ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Extracted:
    """What a format's parser found, before the text is tidied and a title chosen."""

    text: str
    heading: str | None = None
    metadata_title: str | None = None
    pages: int | None = None


_Source = TypeVar("_Source")


# Titles that authoring tools write by themselves: they name no document. A PDF printed
# from Office is titled after the application and the file; a title that is a file name
# (or path) says no more than the upload's own name.
_PLACEHOLDER_TITLE: Final = re.compile(
    # Each part at most once: nested repeats would take exponential time to refuse a
    # hostile title such as "Untitled" and forty digits and a "!".
    r"untitled(?:[\s_-]*document)?(?:[\s_-]*(?:\d+|\(\d+\)))?"
    r"|microsoft\s+\w+\s+-\s.*"
    r"|.*\.(?:docx?|pdf|txt|text|md|markdown|html?|xhtml|rtf|odt|pages|pptx?|xlsx?)",
    re.IGNORECASE,
)


def _heading_or_none(find: Callable[[_Source], str | None], source: _Source) -> str | None:
    """Return the heading ``find`` finds in ``source``, or None if looking fails."""
    # A heading is a nicety: a file whose text reads fine is never refused over one.
    try:
        return find(source)
    except Exception:
        return None


def _clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    return one_line_title(title.translate(_CLEANUP)) or None


def _meaningful(title: str | None) -> str | None:
    """Return a metadata title, or None if it is a placeholder that names nothing."""
    if title is None or not any(c.isalnum() for c in title):
        return None
    return None if _PLACEHOLDER_TITLE.fullmatch(title) else title


# --- Text and Markdown -----------------------------------------------------------------------


def _parse_text(data: bytes, max_chars: int) -> _Extracted:
    text = _decode_text(data, final=True)
    if text is None:
        raise _unsupported(_describe_binary(data))
    return _Extracted(text=text)


@cache
def _markdown() -> MarkdownIt:
    """Return CommonMark, with its limit on nesting depth, so hostile input cannot exhaust
    the stack."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def _parse_markdown(data: bytes, max_chars: int) -> _Extracted:
    parsed = _parse_text(data, max_chars)
    return replace(parsed, heading=_markdown_heading(parsed.text))


def _markdown_heading(text: str) -> str | None:
    # A real parser, so that "# comment" inside a fenced code block is not taken as a heading.
    tokens = _markdown().parse(text)
    for opening, inline in itertools.pairwise(tokens):
        if opening.type == "heading_open" and inline.children is not None:
            heading = "".join(
                child.content for child in inline.children if child.type in ("text", "code_inline")
            )
            if heading.strip():
                return heading
    return None


# --- HTML ------------------------------------------------------------------------------------

# Elements whose text is not part of the document's content.
_HTML_SKIPPED: Final = frozenset(
    {
        "head", "title", "script", "style", "noscript", "template", "nav", "svg", "math",
        "iframe", "object", "embed", "canvas", "button", "select",
    }
)  # fmt: skip
_HTML_PARAGRAPHS: Final = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "h1", "h2", "h3",
        "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre", "figure", "address",
        "form", "fieldset", "details", "hr", "body",
    }
)  # fmt: skip
_HTML_LINES: Final = frozenset({"li", "dt", "dd", "tr", "caption", "figcaption", "summary"})
_HTML_CELLS: Final = frozenset({"td", "th"})
_HTML_PREFORMATTED: Final = frozenset({"pre", "textarea", "listing", "plaintext"})
_HTML_SPACE: Final = re.compile(r"[ \t\n\r\f]+")
_RUNS_OF_SPACES: Final = re.compile(r" {2,}")
_HTML_HEADINGS: Final = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


def _parse_html(data: bytes, max_chars: int) -> _Extracted:
    from bs4 import BeautifulSoup, Tag

    # html.parser builds the tree without recursion, so 100,000 nested <div>s parse fine;
    # lxml's libxml2 stops at depth 256 and silently drops everything after.
    soup = BeautifulSoup(data, "html.parser")
    title = soup.find("title")
    text, heading = _html_text(soup)
    # Collapse the spaces that inline elements leave between words, line by line.
    lines = (_RUNS_OF_SPACES.sub(" ", line).strip(" ") for line in text.split("\n"))
    return _Extracted(
        text="\n".join(lines), heading=heading,
        metadata_title=title.get_text() if isinstance(title, Tag) else None,
    )


class _HeadingEnd:
    """Queued after a heading's closing separator: its text is complete."""


_HEADING_END: Final = _HeadingEnd()


def _html_text(root: Tag) -> tuple[str, str | None]:
    """Return the visible text of an HTML tree, block elements on lines of their own, and
    its first visible heading with text."""
    from bs4 import Tag
    from bs4.element import NavigableString, PreformattedString

    # An explicit stack instead of recursion: the tree may be arbitrarily deep. Items are
    # (node, inside preformatted text) pairs, a separator to emit once a block ends, or
    # the end of the heading being read.
    stack: list[tuple[object, bool] | str | _HeadingEnd] = [(root, False)]
    pieces: list[str] = []
    # Where the text of the heading being read starts in ``pieces``.
    heading_start: int | None = None
    heading: str | None = None
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            pieces.append(item)
            continue
        if isinstance(item, _HeadingEnd):
            heading = _clean_title("".join(pieces[heading_start:]))
            heading_start = None
            continue
        node, preformatted = item
        if isinstance(node, Tag):
            name = node.name
            if name in _HTML_SKIPPED:
                continue
            if name == "br":
                pieces.append("\n")
                continue
            if name in _HTML_HEADINGS and heading is None and heading_start is None:
                heading_start = len(pieces)
                stack.append(_HEADING_END)
            opening, closing = _html_separators(name)
            pieces.append(opening)
            stack.append(closing)
            preformatted = preformatted or name in _HTML_PREFORMATTED
            stack.extend((child, preformatted) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            # PreformattedString covers comments, doctypes, CDATA and processing instructions.
            pieces.append(str(node) if preformatted else _HTML_SPACE.sub(" ", node))
    return "".join(pieces), heading


def _html_separators(name: str) -> tuple[str, str]:
    if name in _HTML_PARAGRAPHS:
        return "\n\n", "\n\n"
    if name in _HTML_LINES:
        # Only before: consecutive list items or rows must not leave a blank line between them.
        return "\n", ""
    if name in _HTML_CELLS:
        return "", "\t"
    return "", ""


# --- PDF -------------------------------------------------------------------------------------


# Text set this much larger than most of a page's is a heading, if it is short enough.
_PDF_HEADING_SCALE: Final = 1.15
_PDF_HEADING_MAX_CHARS: Final = 200


def _parse_pdf(data: bytes, max_chars: int) -> _Extracted:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    pages: list[str] = []
    length = 0
    heading: str | None = None
    try:
        reader = PdfReader(io.BytesIO(data))
        # Many PDFs are encrypted only to restrict printing or copying, with an empty
        # password for reading.
        if reader.is_encrypted and not reader.decrypt(""):
            raise _unsupported("password-protected PDF")
        title = reader.metadata.title if reader.metadata is not None else None
        for page in reader.pages:
            text = _normalize(page.extract_text())
            if text and not length:
                # The first page with text (a cover may have none) holds the heading, if any.
                heading = _heading_or_none(_pdf_heading, page)
            length += len(text)
            # Stop early rather than extract every page of a huge file.
            if length > max_chars:
                raise _too_large(max_chars)
            pages.append(text)
    except ParseError:
        raise
    except LimitReachedError as exc:
        # pypdf refuses streams that decompress beyond its limits.
        raise _too_large(max_chars) from exc
    except Exception as exc:
        # pypdf reports malformed files with arbitrary built-in exceptions as well as its own.
        raise CorruptFile("The PDF is damaged or incomplete and cannot be read.") from exc
    return _Extracted(text="\n\n".join(pages), heading=heading, metadata_title=title,
                      pages=len(pages))


def _pdf_heading(page: PageObject) -> str | None:
    """Return the first short line of a page set clearly larger than most of its text."""
    runs: list[tuple[str, float]] = []

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], font: object,
              font_size: float) -> None:
        # The font size is scaled by the text and current transformation matrices.
        scale = math.sqrt(abs((tm[0] * tm[3] - tm[1] * tm[2]) * (cm[0] * cm[3] - cm[1] * cm[2])))
        runs.append((text, round(font_size * scale, 1)))

    # Extracted again, for one page, to learn the size each run of text is set in.
    page.extract_text(visitor_text=visit)
    sizes: Counter[float] = Counter()
    for text, size in runs:
        sizes[size] += len(text.strip())
    if not sizes:
        return None
    body = sizes.most_common(1)[0][0]
    visible = ((text, size >= body * _PDF_HEADING_SCALE) for text, size in runs if text.strip())
    for large, group in itertools.groupby(visible, key=lambda run: run[1]):
        heading = _clean_title("".join(text for text, _ in group)) if large else None
        if heading and len(heading) <= _PDF_HEADING_MAX_CHARS and any(c.isalpha() for c in heading):
            return heading
    return None


# --- Word ------------------------------------------------------------------------------------

# A real .docx expands to a few times its size; a zip bomb to thousands of times. python-docx
# reads every part into memory, so the archive is checked before it is opened. The declared
# sizes can be trusted: zipfile stops reading a member at its declared size, and the CRC
# check then fails.
_DOCX_MAX_EXPANDED_BYTES: Final = 100 * 1024 * 1024
_DOCX_MAX_COMPRESSION_RATIO: Final = 100
# Small parts may compress very well and cannot do harm.
_DOCX_RATIO_CHECK_MIN_BYTES: Final = 1024 * 1024
_DOCX_CORRUPT: Final = "The Word document is damaged or incomplete and cannot be read."


def _parse_docx(data: bytes, max_chars: int) -> _Extracted:
    from docx.opc.constants import CONTENT_TYPE
    from docx.package import Package
    from docx.parts.document import DocumentPart

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_docx_archive(archive)
        main_part = Package.open(io.BytesIO(data)).main_document_part
        if main_part.content_type != CONTENT_TYPE.WML_DOCUMENT_MAIN:
            raise _unsupported("Office file that is not a Word document")
        document = cast(DocumentPart, main_part).document
        title = document.core_properties.title
        text = "\n\n".join(_docx_blocks(document))
        heading = _heading_or_none(_docx_heading, document)
    except ParseError:
        raise
    except Exception as exc:
        # zipfile, lxml and python-docx all report malformed files in their own ways.
        raise CorruptFile(_DOCX_CORRUPT) from exc
    return _Extracted(text=text, heading=heading, metadata_title=title)


def _check_docx_archive(archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    if "[Content_Types].xml" not in archive.namelist():
        raise _unsupported("ZIP archive that is not a Word document")
    if sum(member.file_size for member in members) > _DOCX_MAX_EXPANDED_BYTES:
        raise DocumentTooLarge(
            f"The Word document expands to more data than we accept "
            f"({_DOCX_MAX_EXPANDED_BYTES // 2**20} MB). Split it into smaller documents, or "
            "remove large images, and upload those."
        )
    for member in members:
        if (
            member.file_size >= _DOCX_RATIO_CHECK_MIN_BYTES
            and member.file_size > member.compress_size * _DOCX_MAX_COMPRESSION_RATIO
        ):
            raise DocumentTooLarge(
                "The Word document is compressed suspiciously well (a possible zip bomb)."
            )


def _docx_blocks(document: Document) -> Iterator[str]:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            yield block.text
        elif isinstance(block, Table):
            yield "\n".join(_docx_table_rows(block))


def _docx_table_rows(table: Table) -> Iterator[str]:
    for row in table.rows:
        cells = row.cells
        # A cell spanning several columns is repeated once per column.
        unique = [cell for i, cell in enumerate(cells) if i == 0 or cell is not cells[i - 1]]
        yield "\t".join(cell.text for cell in unique)


# Word's heading styles, by the names python-docx gives them whatever the document's language.
_DOCX_HEADING_STYLE: Final = re.compile(r"Title|Heading [1-9]")


def _docx_heading(document: Document) -> str | None:
    """Return the first paragraph with text in a heading style, or in one built on it."""
    from docx.oxml.ns import qn
    from docx.styles.style import ParagraphStyle

    styles = {style.style_id for style in document.styles
              if isinstance(style, ParagraphStyle) and _is_docx_heading_style(style)}
    # Read from the XML: python-docx looks a paragraph's style up anew for every paragraph,
    # which takes seconds for a long document.
    for paragraph in document.element.body.iterchildren(qn("w:p")):
        if paragraph.style in styles and (heading := _clean_title(paragraph.text)):
            return heading
    return None


def _is_docx_heading_style(style: ParagraphStyle) -> bool:
    seen: set[str] = set()
    current: ParagraphStyle | None = style
    # A style may be based on another; a hostile file may make the chain a loop.
    while current is not None and current.style_id not in seen:
        if _DOCX_HEADING_STYLE.fullmatch(current.name or ""):
            return True
        seen.add(current.style_id)
        current = current.base_style
    return False


_PARSERS: Final[Mapping[Kind, Callable[[bytes, int], _Extracted]]] = MappingProxyType(
    {
        Kind.TXT: _parse_text,
        Kind.MD: _parse_markdown,
        Kind.HTML: _parse_html,
        Kind.PDF: _parse_pdf,
        Kind.DOCX: _parse_docx,
    }
)
