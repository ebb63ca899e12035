"""An upload's title: its first real heading, else a meaningful metadata title, else its name."""

from __future__ import annotations

import io
import time
from typing import Any

import docx
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from docx.enum.style import WD_STYLE_TYPE
from reportlab.pdfgen.canvas import Canvas

from aistack.documents.models import Document
from aistack.documents.parsing import parse, title_from_name
from aistack.documents.services import document_update, document_upload_create
from tests.documents.files import make_pdf
from tests.realtime.streams import about, stream
from tests.retrieval.helpers import index_now

MAX_CHARS = 100_000
BODY = "Revenue grew in every region.\nHiring goes on in the spring."


@pytest.fixture(autouse=True)
def media_in_tmp(tmp_path: Any, settings: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def title_of(data: bytes, kind: str) -> str | None:
    return parse(data=data, kind=kind, max_chars=MAX_CHARS).title


def make_word(*, paragraphs: list[tuple[str, str]], title: str = "") -> bytes:
    """Return a .docx of (style, text) paragraphs with ``title`` in its properties."""
    document = docx.Document()
    document.core_properties.title = title
    custom = document.styles.add_style("Chapter", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 1"]
    for style, text in paragraphs:
        document.add_paragraph(text, style=style)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- PDF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "title"),
    [
        ("untitled", None),
        ("Untitled document", None),
        ("Microsoft Word - q3-report.docx", None),
        ("Microsoft PowerPoint - deck.pptx", None),
        ("C:\\Users\\ann\\q3-report.docx", None),
        ("", None),
        ("Q3 report", "Q3 report"),
    ],
)
def test_a_pdf_without_a_heading_takes_only_a_meaningful_metadata_title(
    metadata: str, title: str | None
) -> None:
    assert title_of(make_pdf([BODY], title=metadata), "pdf") == title


def test_a_pdf_is_titled_by_its_first_heading_over_its_metadata() -> None:
    pdf = make_pdf([BODY, "Second page."], title="Q3 report", heading="Quarterly results 2024")
    assert title_of(pdf, "pdf") == "Quarterly results 2024"
    untitled = make_pdf([BODY], title="untitled", heading="Board minutes")
    assert title_of(untitled, "pdf") == "Board minutes"


def test_a_pdf_heading_is_looked_for_on_its_first_page_with_text() -> None:
    buffer = io.BytesIO()
    canvas = Canvas(buffer)
    canvas.setTitle("untitled")
    canvas.showPage()  # a cover without text
    canvas.setFont("Helvetica-Bold", 20)
    canvas.drawString(72, 800, "Handbook")
    canvas.setFont("Helvetica", 12)
    for number, line in enumerate(BODY.split("\n")):
        canvas.drawString(72, 770 - 14 * number, line)
    canvas.showPage()
    canvas.drawString(72, 800, "A later page, in the same type.")
    canvas.showPage()
    canvas.save()

    parsed = parse(data=buffer.getvalue(), kind="pdf", max_chars=MAX_CHARS)

    assert parsed.title == "Handbook"
    assert parsed.text.startswith("Handbook\nRevenue grew")
    # A page all in one size has no heading: nothing stands out from its text.
    assert title_of(make_pdf(["Everything here\nis body text."]), "pdf") is None


# --- Word ------------------------------------------------------------------------------------


def test_a_docx_is_titled_by_its_first_paragraph_in_a_heading_style() -> None:
    word = make_word(title="Quarterly report", paragraphs=[
        ("Normal", "Prepared by the finance team."),
        ("Heading 2", "Results"),
        ("Heading 1", "Later chapter"),
    ])
    assert title_of(word, "docx") == "Results"


@pytest.mark.parametrize(
    ("paragraphs", "metadata", "title"),
    [
        ([("Title", "Annual plan"), ("Normal", "Text.")], "", "Annual plan"),
        ([("Chapter", "Onboarding"), ("Normal", "Text.")], "", "Onboarding"),
        ([("Heading 1", "   "), ("Heading 1", "Second try")], "", "Second try"),
        ([("Normal", "Only body text.")], "Quarterly report", "Quarterly report"),
        ([("Normal", "Only body text.")], "Microsoft Word - Document1", None),
        ([("Normal", "Only body text.")], "", None),
    ],
)
def test_docx_titles(paragraphs: list[tuple[str, str]], metadata: str, title: str | None) -> None:
    assert title_of(make_word(paragraphs=paragraphs, title=metadata), "docx") == title


def test_a_long_docx_without_headings_is_searched_quickly() -> None:
    document = docx.Document()
    for n in range(10_000):
        document.add_paragraph(f"Paragraph {n}.")
    buffer = io.BytesIO()
    document.save(buffer)
    word = buffer.getvalue()
    started = time.monotonic()
    assert parse(data=word, kind="docx", max_chars=1_000_000).title is None
    # Looking each paragraph's style up through python-docx took 14 seconds.
    assert time.monotonic() - started < 5


# --- Markdown, text, HTML --------------------------------------------------------------------


def test_markdown_is_titled_by_its_first_heading_with_text() -> None:
    assert title_of(b"Intro.\n\n#\n\n## Setup\n\n# Usage\n", "md") == "Setup"
    assert title_of(b"No heading at all.", "md") is None


def test_plain_text_has_no_title_of_its_own() -> None:
    assert title_of(b"Release notes\n\nDeploys happen on Tuesdays.", "txt") is None


@pytest.mark.parametrize(
    ("page", "title"),
    [
        (b"<title>Team handbook</title><nav><h2>Menu</h2></nav><h1>Welcome</h1><p>Hi.</p>",
         "Welcome"),
        (b"<title>Team handbook</title><h3><img alt=''></h3><h2>Policies</h2><p>Hi.</p>",
         "Policies"),
        (b"<title>Team handbook</title><p>No heading.</p>", "Team handbook"),
        (b"<title>Untitled</title><p>No heading.</p>", None),
        (b"<title>Microsoft Word - handbook.docx</title><p>No heading.</p>", None),
        (b"<title> - </title><p>No heading.</p>", None),
    ],
)
def test_html_titles(page: bytes, title: str | None) -> None:
    assert title_of(page, "html") == title


def test_html_headings_nested_deep_are_found_without_recursion() -> None:
    depth = 50_000
    page = ("<h1>" * depth + "</h1>" * depth + "<h2>Found</h2><p>x</p>").encode()
    assert title_of(page, "html") == "Found"


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("q3-report.pdf", "q3-report"),
        ("board.minutes.2024.docx", "board.minutes.2024"),
        ("handbook/team/people.md", "people"),
        ("C:\\Users\\ann\\Notes.TXT", "Notes"),
        ("README", "README"),
        (".profile", ".profile"),
    ],
)
def test_a_file_name_titles_without_its_folders_or_extension(name: str, title: str) -> None:
    assert title_from_name(name) == title


# --- Uploads ---------------------------------------------------------------------------------


def upload(user: User, name: str, data: bytes, title: str | None = None) -> Document:
    return document_upload_create(workspace=user.personal_workspace, author=user, title=title,
                                  file=SimpleUploadedFile(name, data), content_type=None)


@pytest.mark.django_db
def test_an_upload_is_titled_by_its_name_until_its_text_gives_a_better_one(alice: User) -> None:
    headed = upload(alice, "release-notes.md", b"# Release notes\n\nDeploys on Tuesdays.")
    untitled = upload(alice, "board-minutes.pdf", make_pdf([BODY], title="untitled"))
    assert (headed.title, untitled.title) == ("release-notes", "board-minutes")

    assert index_now(headed).title == "Release notes"
    assert index_now(untitled).title == "board-minutes"


@pytest.mark.django_db
def test_a_title_someone_chose_is_kept(alice: User) -> None:
    given = upload(alice, "notes.md", b"# Heading\n\nBody.", title="My own title")
    renamed = upload(alice, "plan.md", b"# Heading\n\nBody.")
    document_update(document=renamed, title="Renamed before it was read")

    assert index_now(given).title == "My own title"
    assert index_now(renamed).title == "Renamed before it was read"


@pytest.mark.django_db(transaction=True)
def test_the_title_rides_the_job_events_live_and_in_the_replayed_state(
    asgi_url: str, alice: User, clean_redis: None
) -> None:
    rendered_at = time.time()
    with stream(asgi_url, alice) as events:
        document = upload(alice, "release-notes.md", b"# Release notes\n\nDeploys on Tuesdays.")
        _, _, pending = events.wait_for(about(document.pk, "pending", kind="documents.index"))
        assert pending["title"] == "release-notes"
        index_now(document)
        _, _, done = events.wait_for(about(document.pk, "complete", kind="documents.index"))
        assert done["title"] == "Release notes"

    # A page that rendered before the change gets the new title with the state it replays.
    with stream(asgi_url, alice, query=f"?since={rendered_at}") as late:
        _, _, replayed = late.wait_for(about(document.pk, "complete", kind="documents.index"))
        assert replayed["title"] == "Release notes"


def test_a_hostile_metadata_title_is_judged_at_once() -> None:
    # A placeholder pattern with nested repeats would take hours over this one.
    hostile = "Untitled" + "1" * 5000 + "!"
    page = f"<title>{hostile}</title><p>No heading.</p>".encode()

    assert title_of(page, "html") == hostile


def test_a_heading_of_invisible_characters_gives_way_to_the_file_name() -> None:
    # Bidi overrides and zero-width characters show as nothing, or reorder what follows.
    assert title_of("# \u200f\u202e\n\nText.".encode(), "md") is None
    assert title_of("# Re\u200bport \u202eQ3\n\nText.".encode(), "md") == "Report Q3"
