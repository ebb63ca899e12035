"""The workspace a browser session works in, chosen with the switcher."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.http import HttpRequest

from aistack.accounts.models import Role, Workspace
from aistack.accounts.permissions import (
    default_workspace,
    may_manage,
    may_write,
    workspace_roles,
)

SESSION_KEY = "workspace_id"


@dataclass(frozen=True, kw_only=True)
class Place:
    """The current workspace and what the user may do in it."""

    workspace: Workspace
    role: Role | None

    @property
    def may_write(self) -> bool:
        """Return whether the user may create and change content here."""
        return may_write(role=self.role)

    @property
    def may_manage(self) -> bool:
        """Return whether the user may manage this workspace's members."""
        return may_manage(role=self.role)


def signed_in_user(request: HttpRequest) -> User:
    """Return the request's user, which login_required has made sure of."""
    user = request.user
    assert isinstance(user, User)
    return user


# Views and the page header both ask for the place: it is worked out once per request.
_PLACE_ATTRIBUTE = "_aistack_place"


def current_place(request: HttpRequest) -> Place:
    """Return the workspace the user chose, or their default one if they have not chosen."""
    place: Place | None = getattr(request, _PLACE_ATTRIBUTE, None)
    if place is not None:
        return place
    user = signed_in_user(request)
    roles = workspace_roles(user=user)
    chosen = request.session.get(SESSION_KEY)
    # A workspace the user has since left falls back to the default, not an error.
    workspace = (Workspace.objects.filter(pk=chosen).first()
                 if isinstance(chosen, int) and chosen in roles else None)
    if workspace is None:
        workspace = default_workspace(user=user)
    place = Place(workspace=workspace, role=roles.get(workspace.pk))
    setattr(request, _PLACE_ATTRIBUTE, place)
    return place


def place_choose(request: HttpRequest, *, workspace: Workspace) -> None:
    """Make ``workspace`` the session's current workspace."""
    request.session[SESSION_KEY] = workspace.pk
    if hasattr(request, _PLACE_ATTRIBUTE):
        delattr(request, _PLACE_ATTRIBUTE)
