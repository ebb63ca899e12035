"""Business actions on users, workspaces, memberships and tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils.text import slugify

from aistack.accounts.models import ApiToken, Membership, Role, Workspace
from aistack.errors import Conflict, Invalid, NotFound

TOKEN_PREFIX = "ais_"  # noqa: S105 - a marker, not a secret


def _unique_slug(base: str) -> str:
    root = slugify(base)[:120] or "workspace"
    slug = root
    while Workspace.objects.filter(slug=slug).exists():
        slug = f"{root}-{secrets.token_hex(3)}"
    return slug


def token_hash(raw: str) -> str:
    """Return the stored form of an API token."""
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def personal_workspace_create(*, user: User) -> Workspace:
    """Create the user's personal workspace with them as owner."""
    workspace = Workspace.objects.create(
        name=f"{user.get_username()}'s workspace",
        slug=_unique_slug(user.get_username()),
        personal_for=user,
    )
    Membership.objects.create(workspace=workspace, user=user, role=Role.OWNER)
    return workspace


@transaction.atomic
def workspace_create(*, owner: User, name: str) -> Workspace:
    """Create a shared workspace owned by ``owner``."""
    workspace = Workspace.objects.create(name=name, slug=_unique_slug(name))
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    return workspace


def membership_set(*, workspace: Workspace, user: User, role: Role) -> Membership:
    """Add ``user`` to ``workspace`` with ``role``, or change their role."""
    membership, _ = Membership.objects.update_or_create(
        workspace=workspace, user=user, defaults={"role": role}
    )
    return membership


def membership_invite(*, workspace: Workspace, username: str, role: Role) -> Membership:
    """Add an existing user, found by username, to ``workspace`` with ``role``."""
    user = User.objects.filter(username=username.strip(), is_active=True).first()
    if user is None:
        raise Invalid(f"There is no user named {username.strip()!r}.",
                      details={"username": ["No user has this username."]})
    if Membership.objects.filter(workspace=workspace, user=user).exists():
        raise Conflict(f"{user.get_username()} is already a member.",
                       details={"username": ["This user is already a member."]})
    return membership_set(workspace=workspace, user=user, role=role)


def _ensure_another_owner(membership: Membership) -> None:
    # Locking the owners' rows serializes two owners demoting each other at once.
    owners = list(Membership.objects.select_for_update()
                  .filter(workspace_id=membership.workspace_id, role=Role.OWNER)
                  .values_list("pk", flat=True))
    if owners == [membership.pk]:
        raise Conflict("A workspace needs an owner: make someone else owner first.")


@transaction.atomic
def membership_role_change(*, membership: Membership, role: Role) -> Membership:
    """Give a member another role; the last owner keeps theirs."""
    if role != Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Remove a member from their workspace; the last owner stays."""
    _ensure_another_owner(membership)
    membership.delete()


def user_create(
    *, username: str, password: str | None = None, is_staff: bool = False
) -> User:
    """Create a user (a personal workspace comes with it); a password must pass the
    validators in ``AUTH_PASSWORD_VALIDATORS`` (ValidationError otherwise)."""
    user = User(username=username, is_staff=is_staff, is_superuser=is_staff)
    if password:
        validate_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    return user


def api_token_create(*, user: User, name: str = "default", workspace: Workspace | None = None,
                     read_only: bool = False) -> tuple[ApiToken, str]:
    """Create an API token, optionally limited to one of the user's workspaces and to
    reading; the raw token is returned once and never stored."""
    if workspace is not None and not Membership.objects.filter(
            workspace=workspace, user=user).exists():
        raise Invalid(f"{user.get_username()} is not a member of {workspace.name}.")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:12],
                                    key_hash=token_hash(raw), workspace=workspace,
                                    read_only=read_only)
    return token, raw


def api_token_revoke(*, user: User, token_id: int) -> ApiToken:
    """Revoke one of the user's tokens: it stops working at once, on every machine."""
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is None:
        raise NotFound("Token not found.")
    token.delete()
    return token
