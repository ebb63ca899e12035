"""Workspace pages: switching, creating, and managing members."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from aistack.accounts import selectors as accounts
from aistack.accounts.models import Membership, Role
from aistack.accounts.permissions import ensure_can_manage, may_manage, workspace_for_read
from aistack.accounts.services import (
    membership_invite,
    membership_remove,
    membership_role_change,
    workspace_create,
)
from aistack.accounts.sessions import Place, current_place, place_choose, signed_in_user
from aistack.errors import Conflict, Invalid
from aistack.web.forms import InviteForm, RoleForm, WorkspaceForm, add_service_errors
from aistack.web.htmx import HtmxRequest, form_status, redirect_to


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
                  status=form_status(form))


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
        return redirect_to(request, reverse("documents"))
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
        return redirect_to(request, reverse("documents"))
    return _members_changed(request, place)
