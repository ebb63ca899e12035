"""GET /api/v1/events: job status changes pushed through Redis, per workspace."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from harness import wait_for
from tests.conftest import ApiClient
from tests.realtime.streams import about, stream

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = "Deploys happen on Tuesdays. Rollbacks need a second reviewer."


def complete(document: Document) -> bool:
    document.refresh_from_db()
    return document.summary_status == JobStatus.COMPLETE


def test_events_follow_a_summary_job_and_never_cross_workspaces(
    asgi_url: str, celery_worker: Any, alice: User, bob: User,
    scripted_chat: Callable[..., None],
) -> None:
    scripted_chat(latency=1.0)
    scripted.script("echo", Reply(text="Alice's."), Reply(text="Bob's."))
    with stream(asgi_url, alice) as alices, stream(asgi_url, bob) as bobs:
        mine = document_create(workspace=alice.personal_workspace, title="A", content=CONTENT,
                               author=alice)
        for status in ("pending", "processing", "complete"):
            alices.wait_for(about(mine.pk, status))
        # Both of a new document's jobs are announced, in one publish.
        alices.wait_for(about(mine.pk, "pending", kind="documents.index"))
        theirs = document_create(workspace=bob.personal_workspace, title="B",
                                 content=CONTENT, author=bob)
        bobs.wait_for(about(theirs.pk, "complete"))
        time.sleep(0.5)  # time for any stray event to arrive

        assert {data["workspace"] for _, _, data in alices.received()} == {
            alice.personal_workspace.pk}
        assert {data["workspace"] for _, _, data in bobs.received()} == {
            bob.personal_workspace.pk}
        assert not any(data["object_id"] == mine.pk for _, _, data in bobs.received())
    _, _, done = alices.wait_for(about(mine.pk, "complete"))
    assert done["error"] == ""


def test_a_late_subscriber_gets_the_final_state(
    asgi_url: str, celery_worker: Any, alice: User, scripted_chat: Callable[..., None],
) -> None:
    scripted.script("echo", Reply(text="Done before anyone listened."))
    before = time.time()
    document = document_create(workspace=alice.personal_workspace, title="A", content=CONTENT,
                               author=alice)
    wait_for(lambda: complete(document), message="summary")

    # With no cursor, recent completions are replayed from the database.
    with stream(asgi_url, alice) as fresh:
        fresh.wait_for(about(document.pk, "complete"), timeout=5)
    # A page that rendered before the job finished asks from its render time.
    with stream(asgi_url, alice, query=f"?since={before}") as page:
        page.wait_for(about(document.pk, "complete"), timeout=5)


def test_a_reconnecting_client_converges_on_what_it_missed(
    asgi_url: str, celery_worker: Any, alice: User, scripted_chat: Callable[..., None],
) -> None:
    scripted_chat(latency=1.0)
    scripted.script("echo", Reply(text="Written while the client was away."))
    with stream(asgi_url, alice) as first:
        document = document_create(workspace=alice.personal_workspace, title="A",
                                   content=CONTENT, author=alice)
        last_id, _, _ = first.wait_for(about(document.pk, "processing"))
    # Disconnected before the job finished; the browser reconnects with its last event id.
    wait_for(lambda: complete(document), message="summary")

    with stream(asgi_url, alice, last_event_id=last_id) as again:
        again.wait_for(about(document.pk, "complete"), timeout=5)


def test_events_need_authentication(asgi_url: str, anonymous_api: ApiClient) -> None:
    assert anonymous_api.get("/api/v1/events").status_code == 401


def test_many_streams_share_one_subscription_and_each_gets_the_event(
    asgi_url: str, alice: User, bob: User,
) -> None:
    from aistack.documents.summaries import DOCUMENT_SUMMARY
    from aistack.realtime.events import job_events_publish
    from aistack.redis.connections import redis_client

    document = Document.objects.create(workspace=alice.personal_workspace, title="A",
                                       content=CONTENT, content_hash="")
    with ExitStack() as open_streams:
        alices = [open_streams.enter_context(stream(asgi_url, alice)) for _ in range(20)]
        bobs = open_streams.enter_context(stream(asgi_url, bob))
        subscribed = [c for c in redis_client().client_list()
                      if int(c["sub"]) + int(c["psub"]) > 0]
        job_events_publish(kinds=[DOCUMENT_SUMMARY], object_ids=[document.pk],
                           status=JobStatus.PROCESSING, error="")

        for each in alices:
            each.wait_for(about(document.pk, "processing"), timeout=5)
        time.sleep(0.3)
        assert not any(data["object_id"] == document.pk for _, _, data in bobs.received())
    assert len(subscribed) == 1  # one per web process, whatever the number of streams


def test_a_stream_whose_client_falls_behind_is_ended_not_buffered() -> None:
    import asyncio

    from aistack.realtime.events import KEEPALIVE, STREAM_BACKLOG, _Listener

    async def fill() -> list[object]:
        listener = _Listener([1], closes_at=0)
        for _ in range(STREAM_BACKLOG + 10):
            listener.put(KEEPALIVE)
        items = []
        while (item := await listener.get()) is not None:
            items.append(item)
        return items

    items = asyncio.run(fill())
    # What was queued is sent, then the stream ends: the client reconnects and catches up.
    assert len(items) == STREAM_BACKLOG


def test_an_event_the_process_cannot_read_is_dropped_and_the_rest_still_flow() -> None:
    import asyncio

    from aistack.realtime.events import EventHub, _Listener

    listener = _Listener([1], closes_at=0)
    hub = EventHub()
    hub._by_workspace[1].add(listener)
    hub._relay_one(b'{"workspace": 1, "status": "a status of a newer version"}')
    hub._relay_one(json.dumps({"workspace": 1, "kind": "documents.summary", "object_id": 5,
                               "status": "complete", "error": "", "at": 1}).encode())

    event = asyncio.run(listener.get())
    assert (event.object_id, listener.ended) == (5, False)  # type: ignore[union-attr]


def test_a_user_may_hold_only_so_many_streams_at_once(
    asgi_url: str, alice: User, bob: User, settings: Any,
) -> None:
    settings.EVENT_STREAMS_PER_USER = 3
    _, token = api_token_create(user=alice)

    def refused() -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(asgi_url, timeout=10)
        connection.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {token}"})
        return connection.getresponse()

    with ExitStack() as open_streams:
        streams = [open_streams.enter_context(stream(asgi_url, alice)) for _ in range(3)]
        assert len(streams) == 3
        wait_for(lambda: refused().status == 429, timeout=5,
                 message="a fourth stream to be refused")
        answer = refused()
        assert answer.getheader("Retry-After") == "30"
        assert json.loads(answer.read())["error"]["code"] == "rate_limited"
        with stream(asgi_url, bob):  # others are not held up
            pass
        streams[0].close()
        wait_for(lambda: refused().status == 200, timeout=5,
                 message="a stream to be allowed once one closed")
