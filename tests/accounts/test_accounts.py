"""Users, personal workspaces, API tokens and the permission rules."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from aistack.accounts.models import ApiToken, Membership, Role, Workspace
from aistack.accounts.permissions import ensure_can_manage, ensure_can_write, workspace_for_read
from aistack.accounts.services import api_token_create, token_hash, user_create
from aistack.errors import Forbidden, NotFound
from tests.conftest import ApiClient


def test_every_new_user_owns_a_personal_workspace(db: None) -> None:
    user = user_create(username="carol")
    admin_made = User.objects.create_user(username="dave")  # the admin's path, not our service

    for person in (user, admin_made):
        workspace = Workspace.objects.get(personal_for=person)
        assert Membership.objects.get(workspace=workspace, user=person).role == Role.OWNER


def test_tokens_are_stored_hashed_and_shown_once(alice: User) -> None:
    token, raw = api_token_create(user=alice)

    stored = ApiToken.objects.get(pk=token.pk)
    assert raw not in {stored.key_hash, stored.prefix}
    assert stored.key_hash == token_hash(raw)
    assert raw.startswith(stored.prefix)


def test_bearer_token_authenticates_and_wrong_ones_do_not(alice: User) -> None:
    _, raw = api_token_create(user=alice)

    assert ApiClient(raw).get("/api/v1/documents").status_code == 200
    for bad in (raw + "x", "ais_nonsense", "", "not-even-prefixed"):
        response = ApiClient(bad).get("/api/v1/documents")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


def test_inactive_users_tokens_stop_working(alice: User) -> None:
    _, raw = api_token_create(user=alice)
    alice.is_active = False
    alice.save()

    assert ApiClient(raw).get("/api/v1/documents").status_code == 401


def test_roles_decide_reading_writing_and_managing(
    alice: User, bob: User, shared_workspace: Workspace
) -> None:
    outsider = user_create(username="eve")

    assert workspace_for_read(user=bob, workspace_id=shared_workspace.pk) == shared_workspace
    ensure_can_write(user=alice, workspace=shared_workspace)
    ensure_can_manage(user=alice, workspace=shared_workspace)
    with pytest.raises(Forbidden):
        ensure_can_write(user=bob, workspace=shared_workspace)
    with pytest.raises(Forbidden):
        ensure_can_manage(user=bob, workspace=shared_workspace)
    # Outsiders cannot even learn that the workspace exists.
    with pytest.raises(NotFound):
        workspace_for_read(user=outsider, workspace_id=shared_workspace.pk)
    with pytest.raises(NotFound):
        ensure_can_write(user=outsider, workspace=shared_workspace)


def test_editor_may_write_but_not_manage(alice: User, bob: User,
                                         shared_workspace: Workspace) -> None:
    from aistack.accounts.services import membership_set

    membership_set(workspace=shared_workspace, user=bob, role=Role.EDITOR)

    ensure_can_write(user=bob, workspace=shared_workspace)
    with pytest.raises(Forbidden):
        ensure_can_manage(user=bob, workspace=shared_workspace)
