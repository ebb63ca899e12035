"""Parsing uploads: every file is generated here, including the corrupt and hostile ones."""

from __future__ import annotations

import io
import time
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from aistack.documents.parsing import (
    SNIFF_BYTES,
    SUPPORTED_TYPES,
    CorruptFile,
    DocumentTooLarge,
    EmptyDocument,
    Kind,
    ParsedText,
    ParseError,
    UnsupportedFileType,
    detect_kind,
    parse,
)
from tests.documents.files import (
    garbage,
    make_bomb,
    make_docx,
    make_image_only_pdf,
    make_pdf,
    make_zip,
)

MAX_CHARS = 100_000
ACCEPTED = (
    "Accepted types: plain text (.txt), Markdown (.md), HTML (.html), PDF (.pdf), Word (.docx)."
)
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
FRENCH = (
    "Ceci est un résumé de la réunion d'équipe. Nous avons décidé de réécrire le module de "
    "déploiement avant la fin de l'été. Les tâches prioritaires sont: sécurité, fiabilité et "
    "coût.\n\nProchaine réunion: mercredi à 14h. Merci à tous pour vos idées!"
)


def parse_file(data: bytes, *, filename: str, content_type: str | None = None) -> ParsedText:
    kind = detect_kind(filename=filename, content_type=content_type, head=data[:SNIFF_BYTES])
    return parse(data=data, kind=kind, max_chars=MAX_CHARS)


def test_supported_types_list_extensions_and_mime_types() -> None:
    assert set(SUPPORTED_TYPES) == {"txt", "md", "html", "pdf", "docx"}
    assert ".docx" in SUPPORTED_TYPES[Kind.DOCX].extensions
    assert "application/pdf" in SUPPORTED_TYPES[Kind.PDF].mime_types
    assert "text/markdown" in SUPPORTED_TYPES[Kind.MD].mime_types


def test_parse_errors_share_one_root_with_readable_defaults() -> None:
    for error in (UnsupportedFileType, EmptyDocument, CorruptFile, DocumentTooLarge):
        assert issubclass(error, ParseError)
    assert str(EmptyDocument()) == "The file contains no text."


# --- Detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "kind"),
    [
        ("notes.txt", "text/plain", b"Hello", Kind.TXT),
        ("README.md", None, b"# Title\n\nBody", Kind.MD),
        ("page.htm", None, b"<p>Hello</p>", Kind.HTML),
        ("upload", "text/html; charset=utf-8", b"<p>Hello</p>", Kind.HTML),
        ("upload", None, b"Hello", Kind.TXT),
        ("upload", "application/octet-stream", b"Hello", Kind.TXT),
        ("empty.md", None, b"", Kind.MD),
        ("C:\\Users\\ann\\Notes.TXT", None, "Grüße".encode("utf-16"), Kind.TXT),
        ("paper.pdf", "application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", Kind.PDF),
    ],
)
def test_detect_kind_from_label_and_content(
    filename: str, content_type: str | None, head: bytes, kind: Kind
) -> None:
    assert detect_kind(filename=filename, content_type=content_type, head=head) == kind


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "kind"),
    [
        ("paper.txt", "text/plain", b"%PDF-1.4\n1 0 obj", Kind.PDF),
        ("report.zip", "application/zip", make_docx()[:SNIFF_BYTES], Kind.DOCX),
        ("report.txt", None, make_docx()[:SNIFF_BYTES], Kind.DOCX),
        ("notes.docx", DOCX_MIME, b"Just some plain text.", Kind.TXT),
        ("notes.pdf", "application/pdf", b"Just some plain text.", Kind.TXT),
        ("page.txt", "text/plain", b"\xef\xbb\xbf<!DOCTYPE html><title>T</title>", Kind.HTML),
        ("page.md", None, b"<!-- saved -->\n<html lang=en><body>Hi", Kind.HTML),
        ("page.pdf", None, b'<?xml version="1.0"?>\n<html xmlns="x">', Kind.HTML),
    ],
)
def test_detect_kind_trusts_content_over_a_wrong_label(
    filename: str, content_type: str | None, head: bytes, kind: Kind
) -> None:
    assert detect_kind(filename=filename, content_type=content_type, head=head) == kind


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "what"),
    [
        ("photo.png", "image/png", PNG, "PNG image"),
        ("photo.txt", "text/plain", PNG, "PNG image"),
        ("scan.pdf", "application/pdf", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG image"),
        ("setup.exe", None, b"MZ\x90\x00\x03\x00\x00\x00", "Windows executable program"),
        ("tool", None, b"\x7fELF\x02\x01\x01\x00", "executable program"),
        ("old.doc", "application/msword", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "legacy"),
        ("bundle.zip", "application/zip", make_zip({"a.txt": b"hello"}), "ZIP archive"),
        ("report.txt", None, make_zip({"a.txt": b"hello"}), "ZIP archive"),
        (
            "sheet.docx",
            DOCX_MIME,
            make_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<x/>"}),
            "Excel workbook (.xlsx)",
        ),
        ("data.bin", None, garbage(SNIFF_BYTES), "binary data"),
        ("data.csv", "text/csv", b"a,b\n1,2\n", "'.csv' file"),
        ("upload", "application/json", b'{"a": 1}', "application/json"),
    ],
)
def test_detect_kind_rejects_other_types_naming_them(
    filename: str, content_type: str | None, head: bytes, what: str
) -> None:
    with pytest.raises(UnsupportedFileType) as caught:
        detect_kind(filename=filename, content_type=content_type, head=head)
    assert caught.value.message.startswith(f"Unsupported file type: {what}")
    assert caught.value.message.endswith(ACCEPTED)


def test_detect_kind_accepts_a_head_cut_inside_a_character() -> None:
    text = ("Grüße aus Köln. " * 1000).encode()
    head = text[:SNIFF_BYTES]
    assert head[-1:] == b"\xc3"
    assert detect_kind(filename="greeting.txt", content_type=None, head=head) == Kind.TXT


# --- Plain text and Markdown -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"Hello world.\n", "Hello world."),
        (b"\xef\xbb\xbfWith a byte order mark.", "With a byte order mark."),
        ("Grüße, 東京\n".encode("utf-16"), "Grüße, 東京"),
        ("Grüße, 東京\n".encode("utf-32"), "Grüße, 東京"),
        (FRENCH.encode("latin-1"), FRENCH),
        (b"one\r\ntwo\rthree\n", "one\ntwo\nthree"),
        (b"First.\n\n\n\n   \n\t\nSecond.   \n", "First.\n\nSecond."),
        (b"  indented\n    code", "  indented\n    code"),
        (b"a stray \x00NUL" + b" and padding" * 20, "a stray NUL" + " and padding" * 20),
    ],
)
def test_text_is_decoded_and_normalized(data: bytes, text: str) -> None:
    parsed = parse_file(data, filename="notes.txt")
    assert parsed == ParsedText(text=text, title=None, pages=None)


@pytest.mark.parametrize("data", [b"", b" \n\t\r\n ", "\n\n".encode("utf-16")])
def test_empty_text_file(data: bytes) -> None:
    with pytest.raises(EmptyDocument, match=r"^The file contains no text\.$"):
        parse_file(data, filename="empty.txt")


def test_binary_garbage_is_not_text() -> None:
    with pytest.raises(UnsupportedFileType, match=r"^Unsupported file type: binary data\."):
        parse(data=garbage(50_000), kind="txt", max_chars=MAX_CHARS)
    noisy = b"\x00\x01\x02\x03 text" * 100
    with pytest.raises(UnsupportedFileType, match=r"^Unsupported file type: binary data\."):
        parse(data=noisy, kind="txt", max_chars=MAX_CHARS)


def test_too_much_text() -> None:
    with pytest.raises(DocumentTooLarge) as caught:
        parse(data=b"word " * 300, kind="txt", max_chars=1000)
    assert caught.value.message == (
        "The document has more than 1,000 characters of text, the most we accept. "
        "Split it into smaller files and upload those."
    )


def test_unknown_kind_is_unsupported() -> None:
    with pytest.raises(UnsupportedFileType, match=r"^Unsupported file type: 'rtf'\."):
        parse(data=b"{\\rtf1 hello}", kind="rtf", max_chars=MAX_CHARS)


def test_markdown_title_is_the_first_heading_outside_code() -> None:
    source = (
        "Some intro.\n\n```sh\n# not a heading\n```\n\n"
        "## Install *aistack* with `pip`\n\nRun it.\n\n# Later heading\n"
    )
    parsed = parse_file(source.encode(), filename="guide.md")
    assert parsed.title == "Install aistack with pip"
    assert parsed.text == source.strip("\n")


def test_markdown_setext_heading_and_no_heading() -> None:
    assert parse_file(b"Handbook\n========\n\nText.", filename="a.md").title == "Handbook"
    assert parse_file(b"Just text.", filename="b.md").title is None


# --- HTML ------------------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html><head><title>  Team
  handbook </title><style>body { color: red }</style>
<script>alert("hi")</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Welcome</h1>
<!-- a comment -->
<p>First   paragraph with <b>bold</b> and
<a href="#">a link</a>.</p><p>Second&nbsp;paragraph &amp; more.<br>After a break.</p>
<ul><li>one</li><li>two</li></ul>
<table><tr><th>Name</th><th>Role</th></tr><tr><td>Ann</td><td>Lead</td></tr></table>
<pre>line 1
  line 2</pre>
<script type="module">console.log("x")</script><noscript>Enable JavaScript</noscript>
</body></html>"""


def test_html_keeps_visible_text_in_paragraphs() -> None:
    parsed = parse_file(PAGE, filename="handbook.html")
    assert parsed.title == "Welcome"
    assert parsed.text == (
        "Welcome\n\n"
        "First paragraph with bold and a link.\n\n"
        "Second\xa0paragraph & more.\nAfter a break.\n\n"
        "one\ntwo\n\n"
        "Name\tRole\nAnn\tLead\n\n"
        "line 1\nline 2"
    )


def test_html_declared_encoding_is_honoured() -> None:
    page = '<html><head><meta charset="windows-1252"></head><body>Café à 5 €</body></html>'
    parsed = parse_file(page.encode("cp1252"), filename="page.html")
    assert parsed.text == "Café à 5 €"
    assert parsed.title is None


def test_html_nested_100000_deep_parses_without_recursion() -> None:
    depth = 100_000
    page = (
        "<html><head><title>Deep</title></head><body><p>before</p>"
        + "<div>" * depth
        + "deep"
        + "</div>" * depth
        + "<p>after</p></body></html>"
    ).encode()
    started = time.monotonic()
    parsed = parse_file(page, filename="deep.html")
    assert parsed == ParsedText(text="before\n\ndeep\n\nafter", title="Deep")
    assert time.monotonic() - started < 15


def test_html_with_only_markup_is_empty() -> None:
    page = b"<html><head><title>Nothing</title><script>x()</script></head><body> </body></html>"
    with pytest.raises(EmptyDocument):
        parse_file(page, filename="empty.html")


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_text_title_and_pages() -> None:
    pdf = make_pdf(["Hello first page\nsecond line", "Page two text"], title="Annual report")
    assert parse_file(pdf, filename="report.pdf", content_type="application/pdf") == ParsedText(
        text="Hello first page\nsecond line\n\nPage two text", title="Annual report", pages=2
    )


def test_pdf_without_title() -> None:
    # reportlab always writes a title, so copy the page into a PDF without one.
    writer = PdfWriter()
    writer.add_page(PdfReader(io.BytesIO(make_pdf(["Only text"]))).pages[0])
    buffer = io.BytesIO()
    writer.write(buffer)
    parsed = parse(data=buffer.getvalue(), kind="pdf", max_chars=MAX_CHARS)
    assert parsed.title is None
    assert parsed.text == "Only text"


def test_pdf_named_txt_is_read_as_pdf() -> None:
    assert parse_file(make_pdf(["Mislabelled"]), filename="notes.txt").text == "Mislabelled"


def test_scanned_pdf_without_text_layer() -> None:
    with pytest.raises(EmptyDocument) as caught:
        parse_file(make_image_only_pdf(), filename="scan.pdf")
    assert caught.value.message == (
        "The file contains no text. If it is a scanned document, run it through text "
        "recognition (OCR) first."
    )


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_pdf_is_corrupt(keep: float) -> None:
    pdf = make_pdf(["Some text", "More text"], title="Cut")
    with pytest.raises(CorruptFile, match=r"^The PDF is damaged or incomplete"):
        parse_file(pdf[: int(len(pdf) * keep)], filename="cut.pdf")


def test_pdf_garbled_after_header_is_corrupt() -> None:
    with pytest.raises(CorruptFile):
        parse_file(b"%PDF-1.7\n" + garbage(5000), filename="garbled.pdf")


def test_pdf_with_too_much_text_stops_early() -> None:
    pdf = make_pdf(["x" * 80] * 20)
    with pytest.raises(DocumentTooLarge, match=r"more than 500 characters"):
        parse(data=pdf, kind="pdf", max_chars=500)


def _encrypted_pdf(*, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Secret plans"]))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_pdf_encrypted_only_against_editing_is_read() -> None:
    assert parse_file(_encrypted_pdf(user_password=""), filename="a.pdf").text == "Secret plans"


def test_password_protected_pdf_is_unsupported() -> None:
    with pytest.raises(UnsupportedFileType, match=r"^Unsupported file type: password-protected"):
        parse_file(_encrypted_pdf(user_password="secret"), filename="a.pdf")


# --- Word ------------------------------------------------------------------------------------


def test_docx_text_headings_tables_and_title() -> None:
    parsed = parse_file(make_docx(), filename="report.docx", content_type=DOCX_MIME)
    assert parsed == ParsedText(
        text=(
            "Results\n\nRevenue grew in every region.\n\nNext steps\n\nHire two engineers.\n\n"
            "Region\tQ2\tQ3\nEMEA\t10\t12\n\nSpans two columns\tAlone"
        ),
        title="Results",
    )


def test_docx_without_text_is_empty() -> None:
    document = docx.Document()
    document.add_paragraph("   ")
    buffer = io.BytesIO()
    document.save(buffer)
    with pytest.raises(EmptyDocument, match=r"^The file contains no text\.$"):
        parse_file(buffer.getvalue(), filename="blank.docx")


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_docx_is_corrupt(keep: float) -> None:
    data = make_docx()
    with pytest.raises(CorruptFile) as caught:
        parse(data=data[: int(len(data) * keep)], kind="docx", max_chars=MAX_CHARS)
    assert caught.value.message == "The Word document is damaged or incomplete and cannot be read."


def test_docx_with_garbled_xml_is_corrupt() -> None:
    with zipfile.ZipFile(io.BytesIO(make_docx())) as source:
        members = {m.filename: source.read(m) for m in source.infolist()}
    members["word/document.xml"] = members["word/document.xml"][:300]
    with pytest.raises(CorruptFile):
        parse(data=make_zip(members), kind="docx", max_chars=MAX_CHARS)


def test_docx_that_is_really_plain_text() -> None:
    data = b"These notes were saved with the wrong extension."
    assert parse_file(data, filename="notes.docx", content_type=DOCX_MIME).text == data.decode()
    with pytest.raises(CorruptFile):
        parse(data=data, kind="docx", max_chars=MAX_CHARS)


def test_zip_named_docx_that_is_not_word() -> None:
    data = make_zip({"notes/readme.txt": b"hello", "notes/data.csv": b"a,b"})
    kind = detect_kind(filename="notes.docx", content_type=DOCX_MIME, head=data[:SNIFF_BYTES])
    assert kind == Kind.DOCX
    with pytest.raises(UnsupportedFileType) as caught:
        parse(data=data, kind=kind, max_chars=MAX_CHARS)
    assert caught.value.message == (
        f"Unsupported file type: ZIP archive that is not a Word document. {ACCEPTED}"
    )


def test_docx_zip_bomb_is_rejected_before_decompressing() -> None:
    started = time.monotonic()
    bomb = make_bomb(part_megabytes=200)
    assert len(bomb) < 1024 * 1024
    assert detect_kind(filename="bomb.docx", content_type=None, head=bomb[:SNIFF_BYTES]) == "docx"
    with pytest.raises(DocumentTooLarge) as caught:
        parse(data=bomb, kind="docx", max_chars=MAX_CHARS)
    assert caught.value.message == (
        "The Word document expands to more data than we accept (100 MB). Split it into "
        "smaller documents, or remove large images, and upload those."
    )
    assert time.monotonic() - started < 10


def test_docx_part_compressed_suspiciously_well_is_rejected() -> None:
    with pytest.raises(DocumentTooLarge) as caught:
        parse(data=make_bomb(part_megabytes=20), kind="docx", max_chars=MAX_CHARS)
    assert caught.value.message == (
        "The Word document is compressed suspiciously well (a possible zip bomb)."
    )


def test_docx_with_too_much_text() -> None:
    with pytest.raises(DocumentTooLarge, match=r"more than 50 characters"):
        parse(data=make_docx(), kind="docx", max_chars=50)
