"""The one place that decides who may read or write what."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.db.models import QuerySet

from aistack.accounts.models import Membership, Role, TokenScope, Workspace
from aistack.errors import Forbidden, NotFound

_WRITERS = frozenset({Role.OWNER, Role.EDITOR})
MEMBERSHIPS_CACHE_SECONDS = 60
# Where a user signed in with an API token carries the token's scope (and so does the
# user cached for the token): every check below reads the user's roles through it.
_TOKEN_SCOPE = "token_scope"  # noqa: S105 - an attribute's name


def user_scoped(user: User, scope: TokenScope) -> User:
    """Narrow ``user``'s rights, for every check that follows, to an API token's scope."""
    setattr(user, _TOKEN_SCOPE, scope)
    return user


def token_scope(*, user: User | AnonymousUser) -> TokenScope | None:
    """Return the scope of the API token the user came with; None when they came without."""
    scope: TokenScope | None = getattr(user, _TOKEN_SCOPE, None)
    return scope


def memberships_cache_key(user_id: int) -> str:
    """Return where a user's roles by workspace are cached."""
    return f"auth:memberships:{user_id}"


def _roles(user: User | AnonymousUser, cached: dict[int, str] | None = None) -> dict[int, Role]:
    """Return the user's role in each workspace they belong to."""
    if not user.is_authenticated:
        return {}
    # Asked on every request: from Redis, it costs no database query. A membership
    # change drops the entry once committed (see signals); the timeout bounds how long
    # a change racing a reader's refill can go unseen.
    key = memberships_cache_key(user.pk)
    roles = cached if cached is not None else cache.get(key)
    if roles is None:
        roles = dict(Membership.objects.filter(user_id=user.pk)
                     .values_list("workspace_id", "role"))
        cache.set(key, roles, timeout=MEMBERSHIPS_CACHE_SECONDS)
    scope = token_scope(user=user)
    if scope is not None and scope.workspace_id is not None:
        roles = {wid: role for wid, role in roles.items() if wid == scope.workspace_id}
    if scope is not None and scope.read_only:
        return dict.fromkeys(roles, Role.VIEWER)
    return {workspace_id: Role(role) for workspace_id, role in roles.items()}


def workspace_roles(*, user: User | AnonymousUser) -> dict[int, Role]:
    """Return the user's role in each workspace they belong to, by workspace id."""
    return _roles(user)


def role_in(*, user: User | AnonymousUser, workspace: Workspace) -> Role | None:
    """Return the user's role in the workspace, or None for non-members."""
    return _roles(user).get(workspace.pk)


def readable_workspace_ids(*, user: User | AnonymousUser,
                           cached_roles: dict[int, str] | None = None) -> list[int]:
    """Return the ids of the workspaces the user may read.

    ``cached_roles`` is the user's entry under ``memberships_cache_key``, for a caller
    that read it from the cache together with its own keys (one round trip, not two).
    """
    return sorted(_roles(user, cached_roles))


def readable_workspaces(*, user: User | AnonymousUser) -> QuerySet[Workspace]:
    """Return the workspaces the user may read."""
    return Workspace.objects.filter(pk__in=readable_workspace_ids(user=user))


def workspace_for_read(*, user: User | AnonymousUser, workspace_id: int) -> Workspace:
    """Return a workspace the user may read; others look exactly like missing ones."""
    workspace = readable_workspaces(user=user).filter(pk=workspace_id).first()
    if workspace is None:
        raise NotFound("Workspace not found.")
    return workspace


def workspace_ids_for_read(*, user: User | AnonymousUser, workspace_id: int | None) -> list[int]:
    """Return the one workspace asked for (if the user may read it), else all they may read."""
    readable = readable_workspace_ids(user=user)
    if workspace_id is None:
        return readable
    if workspace_id not in readable:
        raise NotFound("Workspace not found.")
    return [workspace_id]


def managed_workspaces(*, user: User | AnonymousUser) -> QuerySet[Workspace]:
    """Return the workspaces the user owns."""
    owned = [workspace_id for workspace_id, role in _roles(user).items() if may_manage(role=role)]
    return Workspace.objects.filter(pk__in=owned)


def usage_workspace_ids(*, user: User | AnonymousUser) -> list[int] | None:
    """Return the workspaces whose AI usage and costs the user may see; None for all (staff)."""
    if user.is_authenticated and user.is_staff:
        scope = token_scope(user=user)
        if scope is None or scope.workspace_id is None:
            return None
        return [scope.workspace_id]
    return list(managed_workspaces(user=user).order_by("pk").values_list("pk", flat=True))


def may_write(*, role: Role | None) -> bool:
    """Return whether a member with ``role`` may create and change content."""
    return role in _WRITERS


def may_manage(*, role: Role | None) -> bool:
    """Return whether a member with ``role`` may manage the workspace and its members."""
    return role == Role.OWNER


def ensure_can_write(*, user: User | AnonymousUser, workspace: Workspace) -> None:
    """Raise unless the user may create and change content in the workspace."""
    role = role_in(user=user, workspace=workspace)
    if role is None:
        raise NotFound("Workspace not found.")
    if not may_write(role=role):
        raise Forbidden("Viewers cannot change content in this workspace.")


def ensure_can_manage(*, user: User | AnonymousUser, workspace: Workspace) -> None:
    """Raise unless the user owns the workspace."""
    role = role_in(user=user, workspace=workspace)
    if role is None:
        raise NotFound("Workspace not found.")
    if not may_manage(role=role):
        raise Forbidden("Only owners can manage this workspace.")


def ensure_can_change_own(*, user: User | AnonymousUser) -> None:
    """Raise unless the user may change what is theirs alone, outside any workspace.

    Their conversations belong to no workspace, so a token limited to one workspace, or
    to reading, reaches none of them for writing.
    """
    scope = token_scope(user=user)
    if scope is not None and scope.narrows:
        raise Forbidden("This API token is limited to a workspace or to reading: "
                        "it cannot change your conversations.")


def default_workspace(*, user: User) -> Workspace:
    """Return the workspace used when a request names none: the personal one, or the
    one workspace the request's token is limited to."""
    scope = token_scope(user=user)
    if scope is not None and scope.workspace_id is not None:
        return workspace_for_read(user=user, workspace_id=scope.workspace_id)
    # One at most: unordered, as ``first()`` would sort by the primary key.
    workspace = next(iter(Workspace.objects.filter(personal_for=user).order_by()[:1]), None)
    if workspace is None:
        workspace = readable_workspaces(user=user).order_by("pk").first()
    if workspace is None:
        raise NotFound("You are not a member of any workspace.")
    return workspace
