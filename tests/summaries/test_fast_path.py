"""Warm summary reads answered ahead of Django, over real HTTP to a real ASGI server."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.signals import request_started

from aistack.accounts.models import ApiToken, Membership, Workspace
from aistack.accounts.services import api_token_create, membership_remove
from aistack.documents import summaries
from aistack.documents.models import Document
from aistack.documents.services import document_create

pytestmark = pytest.mark.django_db(transaction=True)

# What Django's security and clickjacking middleware add: the fast path must add them too.
SECURITY_HEADERS = ("content-type", "x-frame-options", "x-content-type-options",
                    "referrer-policy", "cross-origin-opener-policy")


@pytest.fixture
def django_requests() -> Iterator[list[object]]:
    """Every request that reaches Django's handler (the fast path bypasses it)."""
    seen: list[object] = []

    def count(**kwargs: Any) -> None:
        seen.append(kwargs.get("scope") or kwargs.get("environ"))

    request_started.connect(count, dispatch_uid="fast-path-test")
    yield seen
    request_started.disconnect(dispatch_uid="fast-path-test")


def get(url: str, path: str, token: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(url, timeout=10)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def summarized(workspace: Workspace, author: User) -> Document:
    document = document_create(workspace=workspace, title="Deploys",
                               content="Deploys happen on Tuesdays. Rollbacks need a reviewer.",
                               author=author)
    summaries.summary_read(document=document)  # writes and caches it (the scripted model)
    return document


def test_a_warm_read_skips_django_and_answers_exactly_as_django_does(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None],
    django_requests: list[object],
) -> None:
    scripted_chat()
    document = summarized(alice.personal_workspace, alice)
    _, token = api_token_create(user=alice)
    path = f"/api/v1/documents/{document.pk}/summary"

    # Cold: Django answers, and fills the token, roles and version caches on the way.
    status, django_headers, django_body = get(asgi_url, path, token)
    assert status == 200 and len(django_requests) == 1

    status, headers, body = get(asgi_url, path, token, **{"X-Request-ID": "trace-42"})

    assert status == 200
    assert len(django_requests) == 1, "the warm read went through Django"
    assert body == django_body
    assert {h: headers.get(h) for h in SECURITY_HEADERS} == {
        h: django_headers.get(h) for h in SECURITY_HEADERS}
    assert headers["x-request-id"] == "trace-42"


def test_the_fast_path_never_answers_what_django_would_refuse(
    asgi_url: str, alice: User, bob: User, shared_workspace: Workspace,
    scripted_chat: Callable[..., None], django_requests: list[object],
) -> None:
    scripted_chat()
    private = summarized(alice.personal_workspace, alice)
    shared = summarized(shared_workspace, alice)
    _, alice_token = api_token_create(user=alice)
    _, bob_token = api_token_create(user=bob)
    for token, document in ((alice_token, private), (bob_token, shared)):
        assert get(asgi_url, f"/api/v1/documents/{document.pk}/summary", token)[0] == 200

    # Bob's token, roles and the document's version are all warm: still not his.
    assert get(asgi_url, f"/api/v1/documents/{private.pk}/summary", bob_token)[0] == 404
    # Removed from the workspace: refused at once, though he read it a moment ago.
    membership_remove(membership=Membership.objects.get(workspace=shared_workspace, user=bob))
    assert get(asgi_url, f"/api/v1/documents/{shared.pk}/summary", bob_token)[0] == 404
    # A revoked token stops working at once.
    ApiToken.objects.filter(user=alice).delete()
    assert get(asgi_url, f"/api/v1/documents/{private.pk}/summary", alice_token)[0] == 401
    assert get(asgi_url, f"/api/v1/documents/{private.pk}/summary", "ais_forged")[0] == 401
    assert len(django_requests) == 2 + 4, "every refusal must come from Django"


def test_redis_connections_do_not_grow_with_requests(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None],
) -> None:
    scripted_chat()
    document = summarized(alice.personal_workspace, alice)
    _, token = api_token_create(user=alice)
    paths = [f"/api/v1/documents/{document.pk}/summary", f"/api/v1/documents/{document.pk}",
             "/api/v1/documents"]
    server = redis.Redis.from_url(settings.REDIS_URL)

    def burst() -> None:
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(lambda n: get(asgi_url, paths[n % 3], token)[0],
                                     range(150)))
        assert statuses == [200] * 150

    burst()  # the pools fill up to what 20 concurrent requests need
    before = len(server.client_list())
    burst()
    burst()

    # Before sharing one pool per process, each request's thread and each warm read
    # opened connections of its own: hundreds per burst.
    assert len(server.client_list()) <= before + 5


def test_a_path_the_urlconf_refuses_is_refused_warm_too(
    asgi_url: str, alice: User, scripted_chat: Callable[..., None],
) -> None:
    scripted_chat()
    document = summarized(alice.personal_workspace, alice)
    _, token = api_token_create(user=alice)
    path = f"/api/v1/documents/{document.pk}/summary"
    assert [get(asgi_url, path, token)[0] for _ in range(2)] == [200, 200]  # warm now
    # The same number in other scripts' digits (Arabic-Indic, fullwidth) names nothing.
    for zero in (0x0660, 0xFF10):
        digits = quote("".join(chr(zero + int(d)) for d in str(document.pk)))
        status, _, body = get(asgi_url, f"/api/v1/documents/{digits}/summary", token)
        assert (status, b"No API endpoint" in body) == (404, True)
