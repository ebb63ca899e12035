"""API tokens limited to one workspace, or to reading: everywhere a token is accepted."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from aistack.accounts.models import Role, Workspace
from aistack.accounts.services import api_token_create, membership_set
from aistack.documents import summaries
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.errors import Invalid
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(alice: User) -> Workspace:
    team = Workspace.objects.create(name="Team", slug="team")
    membership_set(workspace=team, user=alice, role=Role.OWNER)
    return team


def client_with(user: User, **scope: object) -> ApiClient:
    return ApiClient(api_token_create(user=user, name="scoped", **scope)[1])  # type: ignore[arg-type]


def test_a_workspace_token_reads_and_writes_that_workspace_alone(
    alice: User, team: Workspace
) -> None:
    personal = document_create(workspace=alice.personal_workspace, title="Diary",
                               content="Private.", author=alice)
    shared = document_create(workspace=team, title="Plan", content="Shared.", author=alice)
    api = client_with(alice, workspace=team)

    listed = api.get("/api/v1/documents").json()
    assert [item["id"] for item in listed["items"]] == [shared.pk]
    assert api.get(f"/api/v1/documents/{personal.pk}").status_code == 404
    assert api.get(f"/api/v1/documents/{shared.pk}").status_code == 200
    assert api.delete(f"/api/v1/documents/{personal.pk}").status_code == 404
    assert api.get("/api/v1/documents", {"workspace": alice.personal_workspace.pk}
                   ).json()["count"] == 0
    refused = api.post("/api/v1/documents", {"title": "T", "content": "C",
                                              "workspace": alice.personal_workspace.pk})
    assert refused.status_code == 404
    # Named no workspace, a new document goes to the token's, not the personal one.
    made = api.post("/api/v1/documents", {"title": "Minutes", "content": "We met."})
    assert made.status_code == 201 and made.json()["workspace"] == team.pk
    # Usage is shown for the token's workspace alone (she owns both).
    assert api.get("/api/v1/usage").status_code == 200
    assert Document.objects.filter(pk=personal.pk).exists()


def test_a_read_only_token_has_a_viewers_rights_everywhere(alice: User, team: Workspace) -> None:
    shared = document_create(workspace=team, title="Plan", content="Shared.", author=alice)
    api = client_with(alice, read_only=True)

    assert api.get(f"/api/v1/documents/{shared.pk}").status_code == 200
    assert api.post("/api/v1/documents", {"title": "T", "content": "C"}).status_code == 403
    assert api.patch(f"/api/v1/documents/{shared.pk}", {"title": "Changed"}).status_code == 403
    assert api.delete(f"/api/v1/documents/{shared.pk}").status_code == 403
    assert Document.objects.get(pk=shared.pk).title == "Plan"
    # Her full token still writes: the limit is the token's, not hers.
    assert ApiClient(api_token_create(user=alice)[1]).post(
        "/api/v1/documents", {"title": "T", "content": "C"}).status_code == 201


def test_a_token_cannot_be_limited_to_a_workspace_its_user_is_not_in(
    alice: User, bob: User
) -> None:
    with pytest.raises(Invalid):
        api_token_create(user=bob, workspace=alice.personal_workspace)


def test_the_warm_summary_read_keeps_to_the_tokens_workspace(
    asgi_url: str, alice: User, team: Workspace, scripted_chat: Callable[..., None]
) -> None:
    scripted_chat()
    personal = document_create(workspace=alice.personal_workspace, title="Diary",
                               content="Private thoughts. Kept here.", author=alice)
    summaries.summary_read(document=personal)  # written and cached
    full = api_token_create(user=alice)[1]
    scoped = api_token_create(user=alice, workspace=team)[1]
    path = f"/api/v1/documents/{personal.pk}/summary"

    def status(token: str) -> int:
        connection = http.client.HTTPConnection(asgi_url, timeout=10)
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answered = connection.getresponse().status
        connection.close()
        return answered

    # Twice each: the first fills the caches the warm path reads, the second is warm.
    assert [status(full), status(full)] == [200, 200]
    assert [status(scoped), status(scoped)] == [404, 404]
