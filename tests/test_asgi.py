"""The ASGI handler's threads: reused by request after request, never lent while busy."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.signals import request_started

from aistack.accounts.services import api_token_create
from aistack.documents.services import document_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def request_threads() -> Iterator[list[threading.Thread]]:
    """The thread each request's synchronous work starts in."""
    seen: list[threading.Thread] = []

    def record(**_: Any) -> None:
        seen.append(threading.current_thread())

    request_started.connect(record, dispatch_uid="asgi-thread-test")
    yield seen
    request_started.disconnect(dispatch_uid="asgi-thread-test")


def get(url: str, path: str) -> tuple[int, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection(url, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.monotonic() - started


def test_requests_one_after_another_reuse_their_threads(
    asgi_url: str, request_threads: list[threading.Thread],
) -> None:
    for _ in range(20):
        assert get(asgi_url, "/healthz")[0] == 200
    # Threads are kept alive by the list, so a new thread could not pass for an old one.
    assert len(request_threads) == 20
    # A request's last step (closing its response) may overlap the next one's start,
    # so a few threads can take turns; a thread per request would make twenty.
    assert len(set(request_threads)) <= 3
    assert request_threads[0] is not threading.main_thread()


def test_a_request_cut_short_does_not_hold_up_the_next(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None],
    request_threads: list[threading.Thread],
) -> None:
    scripted_chat(latency=2.0)
    document = document_create(workspace=alice.personal_workspace, title="Slow",
                               content="Deploys happen on Tuesdays.", author=alice)
    _, token = api_token_create(user=alice)
    host, port = asgi_url.split(":")
    # A cold summary read waits on the (slow) model in its thread; its client leaves.
    with socket.create_connection((host, int(port))) as client:
        client.sendall(f"GET /api/v1/documents/{document.pk}/summary HTTP/1.1\r\n"
                       f"Host: {asgi_url}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        time.sleep(0.5)
    time.sleep(0.2)

    # Its thread is still busy with the model: the next request must not queue behind it.
    status, seconds = get(asgi_url, "/healthz")
    assert status == 200
    assert seconds < 1.0, f"the next request waited {seconds:.1f} s for a busy thread"
    assert request_threads[-1] is not request_threads[0]

    # Once the model has answered, the thread serves requests again.
    time.sleep(2.0)
    for _ in range(3):
        assert get(asgi_url, "/healthz")[0] == 200
    assert set(request_threads[-3:]) <= set(request_threads[:2])
