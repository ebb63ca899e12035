"""Business actions on users, workspaces, memberships and tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import User
from django.db import transaction
from django.utils.text import slugify

from aistack.accounts.models import ApiToken, Membership, Role, Workspace

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


def user_create(
    *, username: str, password: str | None = None, is_staff: bool = False
) -> User:
    """Create a user (a personal workspace comes with it)."""
    user = User(username=username, is_staff=is_staff, is_superuser=is_staff)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    return user


def api_token_create(*, user: User, name: str = "default") -> tuple[ApiToken, str]:
    """Create an API token; the raw token is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:12], key_hash=token_hash(raw)
    )
    return token, raw
