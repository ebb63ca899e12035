"""Uploading in a real Chromium: many files and folders at once, titles and failures live.

Against a real server, PostgreSQL, Redis and (where the documents are indexed) a real
worker; embeddings come from ``scripted:hash``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import BrowserContext, Locator, Page, Request, Response, expect

from aistack.documents.models import Document
from aistack.documents.services import document_create, document_upload_create
from aistack.jobs.kinds import JobStatus
from harness import wait_for
from tests.browser import screenshot
from tests.documents.files import make_docx, make_pdf
from tests.retrieval.helpers import index_now

pytestmark = pytest.mark.django_db(transaction=True)

# The most uploads upload.js keeps in flight at once.
PARALLEL = 3
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
UPLOAD_API = "/api/v1/documents/upload"


@pytest.fixture(autouse=True)
def media_in_tmp(tmp_path: Path, settings: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def models(use_models: Callable[..., None], scripted_chat: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


class Uploads:
    """What the page sent to the upload API: how many requests at once, and their answers."""

    def __init__(self, page: Page) -> None:
        self.in_flight = 0
        self.peak = 0
        self.statuses: list[int] = []
        page.on("request", self._started)
        page.on("response", self._answered)
        page.on("requestfailed", self._failed)

    def _started(self, request: Request) -> None:
        if request.url.endswith(UPLOAD_API):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    # Counted as ended once answered: the page hears the answer no sooner, and only then
    # sends the next file (the browser reports a request finished a little later).
    def _answered(self, response: Response) -> None:
        if response.url.endswith(UPLOAD_API):
            self.in_flight -= 1
            self.statuses.append(response.status)

    def _failed(self, request: Request) -> None:
        if request.url.endswith(UPLOAD_API):
            self.in_flight -= 1


def row(page: Page, path: str) -> Locator:
    return page.locator("li.upload").filter(
        has=page.locator(".upload-name").get_by_text(path, exact=True))


def test_many_files_and_a_folder_upload_a_few_at_a_time_each_with_its_own_result(
    models: None, celery_worker: Any, asgi_url: str, alice: User, logged_in: BrowserContext,
    settings: Any, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    # Low enough that some uploads are turned away for a moment (429) and go on after.
    settings.WRITE_RATE_LIMIT = "6/2 seconds"
    settings.DOCUMENT_MAX_CHARS = 2000
    page = logged_in.new_page()
    uploads = Uploads(page)
    page.goto(f"http://{asgi_url}/documents/")
    page.get_by_role("link", name="Upload files", exact=True).click()
    expect(page.get_by_role("heading", name="Upload files")).to_be_visible()
    screenshot(page, request, "-empty")

    page.get_by_label("Choose files").set_input_files([
        {"name": "release-notes.md", "mimeType": "text/markdown",
         "buffer": b"# Release notes\n\nDeploys happen on Tuesdays."},
        {"name": "q3.docx", "mimeType": "application/octet-stream", "buffer": make_docx()},
        {"name": "board-minutes.pdf", "mimeType": "application/pdf",
         "buffer": make_pdf(["The board met on Monday."], title="untitled")},
        {"name": "photo.txt", "mimeType": "text/plain", "buffer": PNG},
        {"name": "diagram.png", "mimeType": "image/png", "buffer": PNG},
        {"name": "big.txt", "mimeType": "text/plain", "buffer": b"word " * 600},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Standup at ten."},
    ])
    handbook = tmp_path / "handbook"
    (handbook / "team").mkdir(parents=True)
    (handbook / ".git").mkdir()
    (handbook / "intro.md").write_text("# Welcome aboard\n\nRead this first.")
    (handbook / "team" / "people.md").write_text("# People\n\nAnn leads.")
    (handbook / ".DS_Store").write_bytes(bytes(64))
    (handbook / ".git" / "config").write_text("[core]")
    page.get_by_label("Choose a folder").set_input_files(handbook)

    expect(page.locator("li.upload")).to_have_count(9)
    expect(page.locator("#uploads-summary")).to_have_text(
        "7 of 9 files uploaded, 2 not uploaded.", timeout=20_000)
    # Each file has its own bar and its own result, named after its path in the folder.
    for path in ("release-notes.md", "q3.docx", "board-minutes.pdf", "big.txt", "notes.txt",
                 "handbook/intro.md", "handbook/team/people.md"):
        expect(row(page, path).locator("progress")).to_have_attribute("value", "100")
    assert uploads.statuses.count(201) == 7
    # One refused by the server, one before it was sent: each says why, neither offers a retry.
    photo = row(page, "photo.txt")
    expect(photo.locator(".upload-status")).to_have_text(
        re.compile(r"^Not uploaded: Unsupported file type: PNG image\. Accepted types: "))
    expect(photo.get_by_role("button", name=re.compile("Try"))).to_be_hidden()
    expect(row(page, "diagram.png").locator(".upload-status")).to_have_text(
        "Not uploaded: .png files are not supported. Upload text, Markdown, HTML, PDF or Word "
        "(.docx) files.")
    # A few at a time, and the ones over the rate limit waited their turn.
    assert 1 < uploads.peak <= PARALLEL
    assert 429 in uploads.statuses

    # Titles arrive with the index jobs' events: first heading, meaningful title, or name.
    for path, title in (("release-notes.md", "Release notes"), ("q3.docx", "Results"),
                        ("board-minutes.pdf", "board-minutes"), ("notes.txt", "notes"),
                        ("handbook/intro.md", "Welcome aboard"),
                        ("handbook/team/people.md", "People")):
        expect(row(page, path).locator(".upload-document")).to_have_text(title, timeout=30_000)
        expect(row(page, path).locator(".upload-status")).to_have_text("Uploaded and indexed.")
    big = row(page, "big.txt")
    expect(big.locator(".upload-status")).to_have_text(
        "Uploaded, but it could not be indexed: The document has more than 2,000 characters of "
        "text, the most we accept. Split it into smaller files and upload those.")
    expect(big.locator(".badge")).to_have_text("Failed")
    assert set(Document.objects.values_list("title", flat=True)) == {
        "Release notes", "Results", "board-minutes", "big", "notes", "Welcome aboard", "People"}
    screenshot(page, request)
    # On a phone the rows reflow instead of scrolling sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, request, "-phone")
    page.set_viewport_size({"width": 1280, "height": 720})

    # Its page offers no retry that would fail the same way, and says what to do instead.
    big.get_by_role("link", name="big").click()
    expect(page.get_by_role("heading", name="big", exact=True)).to_be_visible()
    expect(page.locator("#summary-error")).to_have_text(
        "The summary could not be made: The document has more than 2,000 characters of text, "
        "the most we accept. Split it into smaller files and upload those.")
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    expect(page.get_by_text("Trying again would fail the same way.")).to_be_visible()
    screenshot(page, request, "-too-large")


def test_a_200_file_drop_sends_a_few_at_a_time_and_survives_a_bad_file_in_the_middle(
    clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext, settings: Any,
    request: pytest.FixtureRequest,
) -> None:
    settings.WRITE_RATE_LIMIT = ""
    page = logged_in.new_page()
    uploads = Uploads(page)
    page.goto(f"http://{asgi_url}/documents/upload/")

    # What a browser hands the page when files are dragged onto it.
    page.evaluate("""() => {
        const transfer = new DataTransfer();
        for (let n = 1; n <= 200; n++) {
            const bad = n === 100;
            const content = bad ? new Uint8Array([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10, 0, 0])
                                : `# Note ${n}\\n\\nWhat happened on day ${n}.`;
            transfer.items.add(new File([content], `note-${n}.md`, {type: "text/markdown"}));
        }
        const zone = document.getElementById("drop-zone");
        for (const type of ["dragenter", "dragover"]) {
            zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                    dataTransfer: transfer}));
        }
        window.dragging = zone.classList.contains("dragging");
        zone.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true,
                                                  dataTransfer: transfer}));
    }""")

    assert page.evaluate("window.dragging") is True
    expect(page.locator("li.upload")).to_have_count(200)
    expect(page.locator("#uploads-summary")).to_have_text(
        "199 of 200 files uploaded, 1 not uploaded.", timeout=60_000)
    bad = row(page, "note-100.md")
    expect(bad.locator(".upload-status")).to_have_text(
        re.compile(r"^Not uploaded: Unsupported file type: PNG image\."))
    for neighbour in ("note-99.md", "note-101.md", "note-200.md"):
        expect(row(page, neighbour).locator(".upload-status")).to_have_text(
            "Uploaded. Its text is being read and indexed…")
    assert 1 < uploads.peak <= PARALLEL
    assert len(uploads.statuses) == 200
    assert Document.objects.count() == 199
    assert not Document.objects.filter(source_name="note-100.md").exists()
    bad.scroll_into_view_if_needed()
    screenshot(page, request)


def test_a_folder_dragged_onto_the_page_is_uploaded_with_its_subfolders(
    clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    handbook = tmp_path / "handbook"
    (handbook / "team").mkdir(parents=True)
    (handbook / ".git").mkdir()
    (handbook / "intro.md").write_text("# Welcome aboard\n\nRead this first.")
    (handbook / "team" / "people.md").write_text("# People\n\nAnn leads.")
    (handbook / ".git" / "config").write_text("[core]")
    (handbook / ".DS_Store").write_bytes(bytes(64))
    loose = tmp_path / "loose.txt"
    loose.write_text("A file dropped beside the folder.")
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/documents/upload/")

    # Dragged in by the browser itself, from real files: the page sees a folder entry.
    drag = logged_in.new_cdp_session(page)
    data = {"items": [], "files": [str(handbook), str(loose)], "dragOperationsMask": 1}
    for step in ("dragEnter", "dragOver"):
        drag.send("Input.dispatchDragEvent", {"type": step, "x": 400, "y": 600, "data": data})
    expect(page.locator("#drop-zone")).to_have_class(re.compile(r"\bdragging\b"))
    screenshot(page, request, "-dragging")
    drag.send("Input.dispatchDragEvent", {"type": "drop", "x": 400, "y": 600, "data": data})

    expect(page.locator("#uploads-summary")).to_have_text("3 of 3 files uploaded.")
    expect(page.locator(".upload-name")).to_have_text(
        ["handbook/intro.md", "handbook/team/people.md", "loose.txt"])
    expect(page.locator("#drop-zone")).not_to_have_class(re.compile(r"\bdragging\b"))
    assert set(Document.objects.values_list("source_name", flat=True)) == {
        "intro.md", "people.md", "loose.txt"}
    screenshot(page, request)


def test_an_open_page_takes_an_uploads_title_live_and_offers_a_retry_only_when_it_can_help(
    models: None, clean_redis: None, asgi_url: str, alice: User, logged_in: BrowserContext,
    settings: Any, request: pytest.FixtureRequest,
) -> None:
    notes = document_upload_create(
        workspace=alice.personal_workspace, author=alice, content_type="text/markdown",
        file=SimpleUploadedFile("release-notes.md", b"# Release notes\n\nDeploys on Tuesdays."))
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/documents/{notes.pk}/")
    listing = logged_in.new_page()
    listing.goto(f"http://{asgi_url}/documents/")
    expect(page.get_by_role("heading", name="release-notes")).to_be_visible()
    expect(listing.get_by_role("link", name="release-notes")).to_be_visible()
    page.evaluate("window.sameDocument = true")
    listing.evaluate("window.sameDocument = true")

    index_now(notes)  # as a worker would

    # The page's own heading (its passages, rendered, may carry one of the same words).
    expect(page.get_by_role("heading", name="Release notes", level=1)).to_be_visible()
    expect(page).to_have_title("Release notes · aistack")
    expect(listing.get_by_role("link", name="Release notes")).to_be_visible()
    assert page.evaluate("window.sameDocument") is True
    assert listing.evaluate("window.sameDocument") is True
    screenshot(page, request, "-titled")

    # Too large to index: once its job fails, the open page says what to do, and no retry.
    settings.DOCUMENT_MAX_CHARS = 1000
    big = document_upload_create(
        workspace=alice.personal_workspace, author=alice, content_type="text/plain",
        file=SimpleUploadedFile("big.txt", b"word " * 300))
    page.goto(f"http://{asgi_url}/documents/{big.pk}/")
    expect(page.get_by_text("Generating summary…")).to_be_visible()
    page.evaluate("window.sameDocument = true")

    index_now(big)

    expect(page.locator("#summary-error")).to_have_text(
        "The summary could not be made: The document has more than 1,000 characters of text, "
        "the most we accept. Split it into smaller files and upload those.")
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    expect(page.get_by_text("Trying again would fail the same way.")).to_be_visible()
    expect(page.get_by_role("link", name="Upload files")).to_be_visible()
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, request, "-too-large")

    # A summary that failed for a passing reason may succeed when asked again: offered.
    deploys = document_create(workspace=alice.personal_workspace, title="Deploys",
                              content="Deploys happen on Tuesdays.", author=alice)
    Document.objects.filter(pk=deploys.pk).update(
        summary_status=JobStatus.FAILED,
        summary_error="The AI model is unavailable right now; try again shortly.")
    page.goto(f"http://{asgi_url}/documents/{deploys.pk}/")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    expect(page.get_by_text("Trying again would fail the same way.")).to_be_hidden()
    screenshot(page, request, "-retry-offered")
    page.get_by_role("button", name="Try again").click()
    expect(page.locator("#summary-failed")).to_be_hidden()
    wait_for(lambda: Document.objects.get(pk=deploys.pk).summary_status == JobStatus.PENDING,
             message="the summary queued again")
