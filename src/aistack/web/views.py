"""The web pages: documents, search, answers, workspaces and their members.

Views parse, authorize, delegate and render, like the API's handlers; the errors
services raise become friendly pages in :mod:`aistack.web.errors`.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from aistack.accounts import selectors as accounts
from aistack.accounts.models import Membership, Role
from aistack.accounts.permissions import (
    ensure_can_manage,
    ensure_can_write,
    may_manage,
    may_write,
    role_in,
    workspace_for_read,
)
from aistack.accounts.services import (
    membership_invite,
    membership_remove,
    membership_role_change,
    workspace_create,
)
from aistack.accounts.sessions import Place, current_place, place_choose, signed_in_user
from aistack.documents.models import Document
from aistack.documents.selectors import document_get, document_list
from aistack.documents.services import (
    document_create,
    document_delete,
    document_update,
    document_upload_create,
)
from aistack.documents.summaries import summary_shown
from aistack.errors import Conflict, Invalid, PayloadTooLarge, UnsupportedMediaType
from aistack.retrieval.selectors import SearchHit, SearchMode, chunks_of
from aistack.retrieval.services import search
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.usage.types import Attribution
from aistack.web.forms import (
    DocumentForm,
    InviteForm,
    RoleForm,
    SearchForm,
    UploadForm,
    WorkspaceForm,
    add_service_errors,
)

DOCUMENTS_PER_PAGE = 20
SEARCH_RESULTS = 10


class HtmxRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it."""

    htmx: HtmxDetails


def _redirect(request: HtmxRequest, url: str) -> HttpResponse:
    """Send the browser to ``url``, whether the request came from htmx or a plain form."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _form_status(form: BaseForm) -> int:
    # 422 tells htmx (configured in base.html) to show the form with its errors.
    return 422 if form.errors else 200


def index(request: HttpRequest) -> HttpResponse:
    """Send signed-in users to their documents; tell everyone else what this server offers."""
    if request.user.is_authenticated:
        return redirect("documents")
    return render(request, "web/index.html")


@login_required
@require_POST
def workspace_switch(request: HttpRequest) -> HttpResponse:
    """Make another of the user's workspaces the current one."""
    try:
        workspace_id = int(request.POST.get("workspace", ""))
    except ValueError:
        raise Invalid("Choose a workspace.") from None
    workspace = workspace_for_read(user=request.user, workspace_id=workspace_id)
    place_choose(request, workspace=workspace)
    messages.success(request, f"You are now working in {workspace.name}.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("documents")
    return redirect(target)


@login_required
def workspace_new(request: HttpRequest) -> HttpResponse:
    """Create a shared workspace owned by the user, and work in it."""
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        workspace = workspace_create(owner=signed_in_user(request),
                                     name=form.cleaned_data["name"])
        place_choose(request, workspace=workspace)
        messages.success(request, f"Created {workspace.name}. Invite your team below.")
        return redirect("members")
    return render(request, "web/workspace_new.html", {"form": form},
                  status=_form_status(form))


def _managed_place(request: HttpRequest) -> Place:
    place = current_place(request)
    ensure_can_manage(user=request.user, workspace=place.workspace)
    return place


def _members_page(
    request: HtmxRequest, place: Place, *, invite: InviteForm | None = None, problem: str = "",
) -> HttpResponse:
    failed = bool(problem) or (invite is not None and bool(invite.errors))
    template = "web/_members.html" if request.htmx else "web/members.html"
    return render(request, template, {
        "place": place, "members": accounts.membership_list(workspace=place.workspace),
        "invite": invite or InviteForm(), "roles": Role.choices, "problem": problem,
    }, status=422 if failed else 200)


def _members_changed(request: HtmxRequest, place: Place) -> HttpResponse:
    """Answer a members action that worked: the new list for htmx, a fresh page otherwise."""
    return _members_page(request, place) if request.htmx else redirect("members")


@login_required
def members(request: HtmxRequest) -> HttpResponse:
    """List the current workspace's members, for its owners to invite, change and remove."""
    return _members_page(request, _managed_place(request))


@login_required
@require_POST
def member_invite(request: HtmxRequest) -> HttpResponse:
    """Add an existing user to the current workspace."""
    place = _managed_place(request)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            membership = membership_invite(workspace=place.workspace,
                                           username=form.cleaned_data["username"],
                                           role=Role(form.cleaned_data["role"]))
        except (Invalid, Conflict) as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Added {membership.user.get_username()} as "
                                      f"{membership.get_role_display().lower()}.")
            return _members_changed(request, place)
    return _members_page(request, place, invite=form)


def _member(request: HtmxRequest, membership_id: int) -> tuple[Place, Membership]:
    place = _managed_place(request)
    return place, accounts.membership_get(workspace=place.workspace, membership_id=membership_id)


@login_required
@require_POST
def member_role(request: HtmxRequest, membership_id: int) -> HttpResponse:
    """Change a member's role."""
    place, membership = _member(request, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, place, problem="Choose one of the roles.")
    try:
        membership_role_change(membership=membership, role=Role(form.cleaned_data["role"]))
    except Conflict as exc:
        return _members_page(request, place, problem=exc.message)
    messages.success(request, f"{membership.user.get_username()} is now "
                              f"{membership.get_role_display().lower()}.")
    if membership.user_id == request.user.pk and not may_manage(role=Role(membership.role)):
        # They no longer manage this workspace: the members page would refuse them.
        return _redirect(request, reverse("documents"))
    return _members_changed(request, place)


@login_required
@require_POST
def member_remove(request: HtmxRequest, membership_id: int) -> HttpResponse:
    """Remove a member from the current workspace."""
    place, membership = _member(request, membership_id)
    try:
        membership_remove(membership=membership)
    except Conflict as exc:
        return _members_page(request, place, problem=exc.message)
    messages.success(request, f"Removed {membership.user.get_username()}.")
    if membership.user_id == request.user.pk:
        return _redirect(request, reverse("documents"))
    return _members_changed(request, place)


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
    page = Paginator(listed, DOCUMENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "web/documents.html", {
        "place": place, "page": page, "title": title, "rendered_at": rendered_at,
    })


@login_required
def document_new(request: HttpRequest) -> HttpResponse:
    """Write a new document into the current workspace."""
    place = current_place(request)
    ensure_can_write(user=request.user, workspace=place.workspace)
    form = DocumentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
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
                  status=_form_status(form))


@login_required
def document_upload(request: HtmxRequest) -> HttpResponse:
    """Upload a file as a new document of the current workspace; its text is extracted later."""
    place = current_place(request)
    ensure_can_write(user=request.user, workspace=place.workspace)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        file = form.cleaned_data["file"]
        try:
            document = document_upload_create(
                workspace=place.workspace, file=file, content_type=file.content_type,
                author=signed_in_user(request), title=form.cleaned_data["title"] or None,
            )
        except (UnsupportedMediaType, PayloadTooLarge) as exc:
            form.add_error("file", exc.message)
        except Invalid as exc:
            add_service_errors(form, exc)
        else:
            return _redirect(request, reverse("document", args=[document.pk]))
    return render(request, "web/upload.html", {
        "form": form, "place": place, "max_bytes": settings.UPLOAD_MAX_BYTES,
    }, status=_form_status(form))


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
        try:
            document_update(document=document, title=form.cleaned_data["title"],
                            content=form.cleaned_data["content"])
        except Invalid as exc:
            add_service_errors(form, exc)
        else:
            return redirect("document", document_id=document.pk)
    return render(request, "web/document_form.html", {"form": form, "document": document},
                  status=_form_status(form))


@login_required
def document_delete_confirm(request: HttpRequest, document_id: int) -> HttpResponse:
    """Ask before deleting a document, and delete it once confirmed."""
    document = _writable_document(request, document_id)
    if request.method == "POST":
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


@login_required
def search_page(request: HttpRequest) -> HttpResponse:
    """Search the current workspace's passages and link each hit to its place."""
    place = current_place(request)
    data = request.GET.copy() if request.GET else None
    if data is not None:
        data.setdefault("mode", SearchMode.HYBRID.value)
    form = SearchForm(data)
    results: list[SearchHit] = []
    query = ""
    if form.is_valid() and form.cleaned_data["q"].strip():
        query = form.cleaned_data["q"].strip()
        mode = SearchMode(form.cleaned_data["mode"])
        ai_rate_limit_hit(user=request.user)
        results = search(workspace_ids=[place.workspace.pk], query=query, k=SEARCH_RESULTS,
                         mode=mode, attribution=Attribution(feature="search",
                                                            user_id=request.user.pk,
                                                            workspace_id=place.workspace.pk))
    return render(request, "web/search.html", {
        "place": place, "form": form, "query": query, "results": results,
    }, status=_form_status(form))


@login_required
def ask_page(request: HttpRequest) -> HttpResponse:
    """Ask a question; the answer streams in from the answers API, with its sources."""
    return render(request, "web/ask.html", {"place": current_place(request)})
