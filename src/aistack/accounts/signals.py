"""Every user gets a personal workspace, however the user was created; failed log-ins
are counted, whichever form or backend they came through."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from aistack.accounts.models import ApiToken, Membership
from aistack.accounts.permissions import memberships_cache_key
from aistack.accounts.selectors import token_cache_key
from aistack.accounts.services import personal_workspace_create
from aistack.accounts.throttling import login_address, login_failure_record
from aistack.cache import cache_forget


# A signal rather than a service call: users are also created by the admin,
# createsuperuser and third-party auth, and all of them must get a workspace.
@receiver(post_save, sender=User)
def give_new_user_a_workspace(sender: type[User], instance: User, created: bool, **_: Any) -> None:
    if created:
        personal_workspace_create(user=instance)


# Authentication and roles are cached (see selectors.user_for_token and
# permissions._roles): any change to what they read drops the entries.


@receiver(post_save, sender=User)
@receiver(post_delete, sender=User)
def forget_cached_user(sender: type[User], instance: User, **_: Any) -> None:
    hashes = ApiToken.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True)
    cache_forget(*(token_cache_key(key_hash) for key_hash in hashes))


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
def forget_cached_token(sender: type[ApiToken], instance: ApiToken, **_: Any) -> None:
    cache_forget(token_cache_key(instance.key_hash))


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def forget_cached_roles(sender: type[Membership], instance: Membership, **_: Any) -> None:
    cache_forget(memberships_cache_key(instance.user_id))


# Django sends this for every failed authenticate(): either log-in form, any backend,
# unknown usernames too (aistack.accounts.throttling).
@receiver(user_login_failed)
def count_failed_login(sender: str, credentials: dict[str, Any],
                       request: HttpRequest | None = None, **_: Any) -> None:
    login_failure_record(username=str(credentials.get("username") or ""),
                         address=login_address(request))
