"""Reads of accounts data."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from aistack.accounts.models import ApiToken, Membership, Workspace
from aistack.accounts.permissions import user_scoped
from aistack.accounts.services import TOKEN_PREFIX, token_hash
from aistack.errors import NotFound

# Writing last_used_at on every request would turn every read into a write.
_LAST_USED_RESOLUTION = timedelta(minutes=5)


def token_cache_key(key_hash: str) -> str:
    """Return where the user of the token with ``key_hash`` is cached."""
    return f"auth:token:{key_hash}"


def user_for_token(*, raw: str) -> User | None:
    """Return the active user a bearer token belongs to, or None."""
    if (key := token_user_cache_key(raw=raw)) is None:
        return None
    # Every API request authenticates: from Redis, it costs no database query. Revoking
    # the token or changing its user drops the entry (see signals).
    cached: User | None = cache.get(key)
    if cached is not None:
        return cached
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(raw), user__is_active=True)
        .first()
    )
    if token is None:
        return None
    user = user_scoped(token.user, token.scope) if token.scope.narrows else token.user
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    # Only as long as last_used_at's resolution, so the column stays that accurate.
    cache.set(key, user, timeout=_LAST_USED_RESOLUTION.total_seconds())
    # A revocation that committed after the read above, and dropped the entry before it
    # was set, would leave the token working until the entry expires: look again.
    if not ApiToken.objects.filter(pk=token.pk).exists():
        cache.delete(key)
        return None
    return user


def credentials_valid(*, authorization: str, session_key: str | None) -> bool:
    """Return whether a request's bearer token or session cookie names an active user."""
    scheme, _, raw = authorization.partition(" ")
    if scheme.lower() == "bearer" and user_for_token(raw=raw.strip()) is not None:
        return True
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    user_id = session.get(SESSION_KEY)
    return user_id is not None and User.objects.filter(pk=user_id, is_active=True).exists()


def token_user_cache_key(*, raw: str) -> str | None:
    """Return where the user of bearer token ``raw`` is cached; None if it is no token of ours."""
    return token_cache_key(token_hash(raw)) if raw.startswith(TOKEN_PREFIX) else None


def membership_list(*, workspace: Workspace) -> QuerySet[Membership]:
    """Return the workspace's memberships with their users, by username."""
    return workspace.memberships.select_related("user").order_by("user__username")


def membership_get(*, workspace: Workspace, membership_id: int) -> Membership:
    """Return one membership of the workspace."""
    membership = membership_list(workspace=workspace).filter(pk=membership_id).first()
    if membership is None:
        raise NotFound("Member not found.")
    return membership


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    """Return the user's API tokens with their workspaces, newest first."""
    return ApiToken.objects.filter(user=user).select_related("workspace").order_by("-created_at")
