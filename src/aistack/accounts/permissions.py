"""The one place that decides who may read or write what."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from aistack.accounts.models import Membership, Role, Workspace
from aistack.errors import Forbidden, NotFound

_WRITERS = frozenset({Role.OWNER, Role.EDITOR})


def role_in(*, user: User | AnonymousUser, workspace: Workspace) -> Role | None:
    """Return the user's role in the workspace, or None for non-members."""
    if not user.is_authenticated:
        return None
    role = (
        Membership.objects.filter(workspace=workspace, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )
    return Role(role) if role else None


def readable_workspaces(*, user: User | AnonymousUser) -> QuerySet[Workspace]:
    """Return the workspaces the user may read."""
    if not user.is_authenticated:
        return Workspace.objects.none()
    return Workspace.objects.filter(memberships__user_id=user.pk)


def workspace_for_read(*, user: User | AnonymousUser, workspace_id: int) -> Workspace:
    """Return a workspace the user may read; others look exactly like missing ones."""
    workspace = readable_workspaces(user=user).filter(pk=workspace_id).first()
    if workspace is None:
        raise NotFound("Workspace not found.")
    return workspace


def ensure_can_write(*, user: User | AnonymousUser, workspace: Workspace) -> None:
    """Raise unless the user may create and change content in the workspace."""
    role = role_in(user=user, workspace=workspace)
    if role is None:
        raise NotFound("Workspace not found.")
    if role not in _WRITERS:
        raise Forbidden("Viewers cannot change content in this workspace.")


def ensure_can_manage(*, user: User | AnonymousUser, workspace: Workspace) -> None:
    """Raise unless the user owns the workspace."""
    role = role_in(user=user, workspace=workspace)
    if role is None:
        raise NotFound("Workspace not found.")
    if role != Role.OWNER:
        raise Forbidden("Only owners can manage this workspace.")


def default_workspace(*, user: User) -> Workspace:
    """Return the workspace used when a request names none: the personal one."""
    workspace = Workspace.objects.filter(personal_for=user).first()
    if workspace is None:
        workspace = readable_workspaces(user=user).order_by("pk").first()
    if workspace is None:
        raise NotFound("You are not a member of any workspace.")
    return workspace
