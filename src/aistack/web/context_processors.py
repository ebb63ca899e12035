"""What every page's header needs: the workspace switcher and the user's role."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from aistack.accounts.models import Workspace
from aistack.accounts.permissions import readable_workspaces
from aistack.accounts.sessions import Place, current_place, signed_in_user
from aistack.errors import NotFound


@dataclass(frozen=True, kw_only=True)
class Navigation:
    """The header of a signed-in user's page."""

    place: Place
    workspaces: QuerySet[Workspace]


def _navigation(request: HttpRequest) -> Navigation | None:
    if not request.user.is_authenticated:
        return None
    try:
        place = current_place(request)
    except NotFound:
        # A user in no workspace at all still gets a page that says so.
        return None
    return Navigation(place=place,
                      workspaces=readable_workspaces(user=signed_in_user(request))
                      .order_by("name", "pk"))


def navigation(request: HttpRequest) -> dict[str, object]:
    """Add ``nav`` to template contexts, read only by the pages that show it."""
    return {"nav": SimpleLazyObject(lambda: _navigation(request))}
