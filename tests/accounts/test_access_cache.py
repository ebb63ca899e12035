"""Authentication and roles come from Redis on the hot path, and never outlive a change."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from aistack.accounts.models import ApiToken, Membership, Role, Workspace
from aistack.accounts.services import api_token_create, membership_remove, membership_role_change
from aistack.documents.services import document_create
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_warm_authenticated_read_costs_one_query(
    alice: User, django_assert_num_queries: object
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Deploys",
                               content="Deploys happen on Tuesdays.", author=alice)
    _, raw = api_token_create(user=alice)
    api = ApiClient(raw)
    assert api.get(f"/api/v1/documents/{document.pk}").status_code == 200

    # The token's user and the roles come from Redis: only the document is read.
    with django_assert_num_queries(1):  # type: ignore[operator]
        assert api.get(f"/api/v1/documents/{document.pk}").status_code == 200


def test_a_revoked_token_stops_working_at_once(alice: User) -> None:
    _, raw = api_token_create(user=alice)
    api = ApiClient(raw)
    assert api.get("/api/v1/documents").status_code == 200

    ApiToken.objects.get(user=alice).delete()

    assert api.get("/api/v1/documents").status_code == 401


def test_a_deactivated_user_is_locked_out_at_once(alice: User) -> None:
    _, raw = api_token_create(user=alice)
    api = ApiClient(raw)
    assert api.get("/api/v1/documents").status_code == 200

    alice.is_active = False
    alice.save()

    assert api.get("/api/v1/documents").status_code == 401


def test_role_changes_and_removals_apply_at_once(
    alice: User, bob: User, shared_workspace: Workspace, bob_api: ApiClient
) -> None:
    document = document_create(workspace=shared_workspace, title="Runbook",
                               content="Restart the queue first.", author=alice)
    path = f"/api/v1/documents/{document.pk}"
    assert bob_api.patch(path, {"title": "Mine"}).status_code == 403

    membership = Membership.objects.get(workspace=shared_workspace, user=bob)
    membership_role_change(membership=membership, role=Role.EDITOR)
    assert bob_api.patch(path, {"title": "Mine"}).status_code == 200

    membership_remove(membership=membership)
    assert bob_api.get(path).status_code == 404
