"""Every user gets a personal workspace, however the user was created."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models.signals import post_save
from django.dispatch import receiver

from aistack.accounts.services import personal_workspace_create


# A signal rather than a service call: users are also created by the admin,
# createsuperuser and third-party auth, and all of them must get a workspace.
@receiver(post_save, sender=User)
def give_new_user_a_workspace(sender: type[User], instance: User, created: bool, **_: Any) -> None:
    if created:
        personal_workspace_create(user=instance)
