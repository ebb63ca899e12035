"""Document pages: the list, one document, writing, uploading, editing, deleting.

Views parse, authorize, delegate and render, like the API's handlers; the errors
services raise become friendly pages in :mod:`aistack.web.errors`.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe

from aistack.accounts.permissions import ensure_can_write, may_write, role_in
from aistack.accounts.sessions import current_place, signed_in_user
from aistack.documents.models import Document
from aistack.documents.selectors import document_get, document_list
from aistack.documents.services import (
    document_create,
    document_delete,
    document_update,
    document_upload_create,
)
from aistack.documents.summaries import summary_shown
from aistack.errors import Invalid, PayloadTooLarge, UnsupportedMediaType
from aistack.rendering import document_html
from aistack.retrieval.selectors import chunks_of
from aistack.usage.ratelimits import write_rate_limit_hit
from aistack.web.forms import (
    UPLOAD_EXTENSIONS,
    UPLOAD_MIME_TYPES,
    DocumentForm,
    UploadForm,
    add_service_errors,
)
from aistack.web.htmx import HtmxRequest, form_status, redirect_to

DOCUMENTS_PER_PAGE = 20


def index(request: HttpRequest) -> HttpResponse:
    """Send signed-in users to their documents; tell everyone else what this server offers."""
    if request.user.is_authenticated:
        return redirect("documents")
    return render(request, "web/index.html")


def _page_of(paginator: Paginator[Document],
             asked: str | None) -> tuple[Page[Document], str | None]:
    """Return the page asked for, or the nearest one and what was asked, fit to show.

    Not a number, or below 1, is page 1; past the end is the last page.
    """
    try:
        number = max(int(asked or 1), 1)
    except ValueError:
        number = 1
    page = paginator.get_page(number)
    # Echoed into the page's notice: printable characters only, and not a screenful.
    shown = "".join(c for c in asked or "" if c.isprintable())[:40]
    return page, None if shown in {"", str(page.number)} else shown


@login_required
def documents(request: HttpRequest) -> HttpResponse:
    """List the current workspace's documents, newest first, with their live statuses."""
    # Taken before the list is read: events after it are replayed when the page subscribes.
    rendered_at = time.time()
    place = current_place(request)
    # PostgreSQL text cannot hold NUL; a filter with one could match nothing anyway.
    title = request.GET.get("title", "").replace("\x00", "").strip()
    listed = document_list(user=request.user, workspace_id=place.workspace.pk,
                           title=title or None)
    page, missing_page = _page_of(Paginator(listed, DOCUMENTS_PER_PAGE), request.GET.get("page"))
    return render(request, "web/documents.html", {
        "place": place, "page": page, "title": title, "rendered_at": rendered_at,
        "missing_page": missing_page,
    })


@login_required
def document_new(request: HttpRequest) -> HttpResponse:
    """Write a new document into the current workspace."""
    place = current_place(request)
    ensure_can_write(user=request.user, workspace=place.workspace)
    form = DocumentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        write_rate_limit_hit(user=request.user)
        try:
            document = document_create(workspace=place.workspace,
                                       title=form.cleaned_data["title"],
                                       content=form.cleaned_data["content"],
                                       author=signed_in_user(request))
        except Invalid as exc:
            add_service_errors(form, exc)
        else:
            return redirect("document", document_id=document.pk)
    return render(request, "web/document_form.html", {"form": form, "place": place},
                  status=form_status(form))


@login_required
def document_upload(request: HtmxRequest) -> HttpResponse:
    """Upload files as new documents of the current workspace; their text is extracted later.

    The page sends each file to the upload API itself (upload.js), a few at a time, and
    follows them through the event stream; this view takes the one file a page without
    JavaScript posts.
    """
    # Taken before anything is uploaded: the page follows its uploads' jobs from then on.
    rendered_at = time.time()
    place = current_place(request)
    ensure_can_write(user=request.user, workspace=place.workspace)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        write_rate_limit_hit(user=request.user)
        file = form.cleaned_data["file"]
        try:
            document = document_upload_create(
                workspace=place.workspace, file=file, content_type=file.content_type,
                author=signed_in_user(request),
            )
        except (UnsupportedMediaType, PayloadTooLarge) as exc:
            form.add_error("file", exc.message)
        except Invalid as exc:
            add_service_errors(form, exc)
        else:
            return redirect_to(request, reverse("document", args=[document.pk]))
    return render(request, "web/upload.html", {
        "form": form, "place": place, "max_bytes": settings.UPLOAD_MAX_BYTES,
        "extensions": ",".join(UPLOAD_EXTENSIONS),
        "mime_types": ",".join(UPLOAD_MIME_TYPES), "rendered_at": rendered_at,
    }, status=form_status(form))


def _writable_document(request: HttpRequest, document_id: int) -> Document:
    document = document_get(user=request.user, document_id=document_id)
    ensure_can_write(user=request.user, workspace=document.workspace)
    return document


@login_required
def document_edit(request: HttpRequest, document_id: int) -> HttpResponse:
    """Change a document's title or text; changed text is indexed and summarized again."""
    document = _writable_document(request, document_id)
    form = DocumentForm(request.POST or None,
                        initial={"title": document.title, "content": document.content})
    if request.method == "POST" and form.is_valid():
        write_rate_limit_hit(user=request.user)
        try:
            document_update(document=document, title=form.cleaned_data["title"],
                            content=form.cleaned_data["content"])
        except Invalid as exc:
            add_service_errors(form, exc)
        else:
            return redirect("document", document_id=document.pk)
    return render(request, "web/document_form.html", {"form": form, "document": document},
                  status=form_status(form))


@login_required
def document_delete_confirm(request: HttpRequest, document_id: int) -> HttpResponse:
    """Ask before deleting a document, and delete it once confirmed."""
    document = _writable_document(request, document_id)
    if request.method == "POST":
        write_rate_limit_hit(user=request.user)
        document_delete(document=document)
        messages.success(request, f"Deleted “{document.title}”.")
        return redirect("documents")
    return render(request, "web/document_delete.html", {"document": document})


@login_required
def document_page(request: HttpRequest, document_id: int) -> HttpResponse:
    """Show a document, its passages and its summary, which updates live as its job runs."""
    # Taken before the state is read: events after it are replayed when the page subscribes.
    rendered_at = time.time()
    document = document_get(user=request.user, document_id=document_id)
    return render(request, "web/document.html", {
        "document": document,
        # Safe: sanitized by nh3 (aistack.rendering), which leaves only Markdown's tags.
        "content_html": mark_safe(document_html(  # noqa: S308
            content=document.content, content_hash=document.content_hash)),
        "summary": summary_shown(document=document),
        "chunks": chunks_of(document.pk),
        "may_write": may_write(role=role_in(user=request.user, workspace=document.workspace)),
        "rendered_at": rendered_at,
    })


@login_required
def document_chunks(request: HttpRequest, document_id: int) -> HttpResponse:
    """Render a document's passages: the page reloads them once indexing finishes."""
    document = document_get(user=request.user, document_id=document_id)
    return render(request, "web/_chunks.html", {"document": document,
                                                 "chunks": chunks_of(document.pk)})
