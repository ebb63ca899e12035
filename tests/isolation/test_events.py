"""Bob's event streams carry his workspace's jobs only, however he subscribes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from aistack.documents.services import document_create
from harness import http
from tests.realtime.streams import about, stream

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "Zanzibar quokka ledger: the vault code is 7741."


@pytest.fixture
def models(use_models: Callable[..., None], scripted_chat: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


def test_his_streams_never_carry_her_events(
    models: None, alice: User, bob: User, asgi_url: str, celery_worker: Any
) -> None:
    with (stream(asgi_url, alice) as hers, stream(asgi_url, bob) as his,
          stream(asgi_url, bob, query="?since=0") as his_replayed):
        secret = document_create(workspace=alice.personal_workspace, title="Vault",
                                 content=SECRET, author=alice)
        hers.wait_for(about(secret.pk, "complete"))
        own = document_create(workspace=bob.personal_workspace, title="Sightings",
                              content="Two quokkas on the trail.", author=bob)
        # His streams are live: they hear of his own job, which finished after hers.
        his.wait_for(about(own.pk, "complete"))
        his_replayed.wait_for(about(own.pk, "complete"))
        time.sleep(0.5)  # time for any stray event to arrive

        for events in (his, his_replayed):
            received = [data for _, _, data in events.received()]
            assert {data["workspace"] for data in received} == {bob.personal_workspace.pk}
            assert secret.pk not in {data["object_id"] for data in received}

    # Reconnecting from the start of time replays his workspace's history only.
    with stream(asgi_url, bob, last_event_id="0") as reconnected:
        reconnected.wait_for(about(own.pk, "complete"), timeout=5)
        assert {data["workspace"] for _, _, data in reconnected.received()} == {
            bob.personal_workspace.pk}


def test_subscribing_to_her_workspace_is_refused(
    alice: User, bob: User, asgi_url: str
) -> None:
    _, token = api_token_create(user=bob)
    base = f"http://{asgi_url}/api/v1/events"

    status, body = http("GET", f"{base}?workspace={alice.personal_workspace.pk}", token=token)
    missing_status, missing_body = http("GET", f"{base}?workspace=987654321", token=token)

    assert status == missing_status == 404
    assert body == missing_body
    with stream(asgi_url, bob, query=f"?workspace={bob.personal_workspace.pk}") as own:
        assert own.response.status == 200
