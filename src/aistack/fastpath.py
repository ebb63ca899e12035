"""The summary fast path: warm reads answered in the event loop, before Django.

An optimisation, not the pattern to copy: everywhere else a request goes through
Django (middleware, authentication, the view, its services). This is the one place
that answers from cached data alone, and it re-checks what the view would check, with
the view's own selectors and renderer, so that both paths give the same answer.

Django's ASGI handler spends milliseconds of CPU on every request: a thread for the
request's synchronous parts, the middleware chain, the signals. A warm summary read
needs none of that: the token's user, the user's roles, the document's version and
the summary are all in Redis, behind the same selectors the view uses. This layer
answers such a read itself, reading Redis asynchronously (the loop serves other
requests meanwhile), with the headers Django's security middleware would add, and
hands every other request to Django unchanged: a cache miss, a refusal, a redirect
to HTTPS, an error.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import resolve

from aistack.accounts.permissions import memberships_cache_key
from aistack.accounts.selectors import token_user_cache_key
from aistack.api import api
from aistack.cache import event_loop_cache
from aistack.documents import selectors as documents_selectors
from aistack.documents import summaries
from aistack.documents.schemas import SummaryOut
from aistack.documents.summaries import SummaryState
from aistack.observability.logging import request_id_bind
from aistack.observability.metrics import http_request_seconds
from aistack.observability.middleware import REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

SUMMARY_PATH = re.compile(r"/api/v1/documents/([0-9]{1,18})/summary")  # ASCII, as the URLconf


def _never_called(request: Any) -> HttpResponse:
    raise AssertionError("only the middleware's request and response hooks are used")


async def summary_warm_json(request: HttpRequest, *, document_id: int) -> str | None:
    """Return the body ``get_summary`` would send, if Redis alone can answer; else None.

    The same token, permission and
    summary entries as the view, read in two round trips that do not block the event
    loop. It answers only when every entry is cached and allows the read; anything
    else, refusals included, is left to the view.
    """
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    token_key = token_user_cache_key(raw=raw.strip()) if scheme.lower() == "bearer" else None
    if token_key is None:
        return None
    ref_key = documents_selectors.document_ref_cache_key(document_id)
    # Shared values, read here and never changed: each is unpickled once per process.
    cache = event_loop_cache()
    first = await cache.aget_many_shared([token_key, ref_key])
    user, found = first.get(token_key), first.get(ref_key)
    if user is None or found is None:
        return None
    # The summary's key is known now, so it is read with the roles, before the check.
    version = summaries.summary_version(document=documents_selectors.DocumentRef(
        pk=document_id, workspace_id=found[0], content_hash=found[1]))
    roles_key = memberships_cache_key(user.pk)
    second = await cache.aget_many_shared([roles_key, version.cache_key])
    roles = second.get(roles_key)
    if roles is None or documents_selectors.readable_ref(
            user=user, document_id=document_id, found=found, roles=roles) is None:
        return None
    state = summaries.summary_from_cached(version, second.get(version.cache_key))
    if state is None:
        return None
    # The API's own renderer: byte for byte what the view's response carries.
    rendered: str = api.renderer.render(request, _summary_out(state), response_status=200)
    return rendered


@functools.lru_cache(maxsize=512)
def _summary_out(state: SummaryState) -> dict[str, Any]:
    """The response's data for ``state``, built once per process: never change it."""
    out: dict[str, Any] = SummaryOut.from_orm(state).model_dump()
    return out


class WarmReads:
    """An ASGI application: warm summary reads from Redis, everything else to Django."""

    def __init__(self, django: ASGIHandler) -> None:
        self.django = django
        self.security = SecurityMiddleware(_never_called)
        self.frames = XFrameOptionsMiddleware(_never_called)
        # The label Django's own timing gives this route, so both paths count as one.
        self.route = resolve("/api/v1/documents/1/summary").route
        self._headers: dict[bool, list[tuple[bytes, bytes]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a warm summary read, or pass the request to Django."""
        if (scope["type"] == "http" and scope["method"] == "GET"
                and (match := SUMMARY_PATH.fullmatch(scope["path"]))):
            started = time.perf_counter()
            answer = await self._summary(scope, int(match[1]))
            if answer is not None:
                headers, body = answer
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                http_request_seconds.labels(method="GET", route=self.route, status="200").observe(
                    time.perf_counter() - started)
                return
        await self.django(scope, receive, send)

    async def _summary(self, scope: Scope, document_id: int
                       ) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        try:
            request = ASGIRequest(scope, io.BytesIO())
            request.get_host()  # a host Django refuses gets Django's answer
            if self.security.process_request(request) is not None:
                return None  # redirected to HTTPS
            body = await summary_warm_json(request, document_id=document_id)
        except DisallowedHost:
            return None
        except Exception:
            logger.warning("warm summary read failed; Django answers instead", exc_info=True)
            return None
        if body is None:
            return None
        encoded = body.encode()
        request_id = request_id_bind(
            request.headers.get(REQUEST_ID_HEADER), method="GET", path=request.path)
        return [*self._common_headers(request),
                (b"content-length", str(len(encoded)).encode()),
                (REQUEST_ID_HEADER.encode(), request_id.encode())], encoded

    def _common_headers(self, request: ASGIRequest) -> list[tuple[bytes, bytes]]:
        """The headers every warm read carries: the content type and the middleware's.

        Found once per process by running the security and clickjacking middleware on
        a response; what they add depends on the settings and on whether the request
        came over HTTPS, nothing else.
        """
        secure = request.is_secure()
        if (headers := self._headers.get(secure)) is None:
            response = HttpResponse(content_type="application/json; charset=utf-8")
            self.security.process_response(request, response)
            self.frames.process_response(request, response)
            headers = self._headers[secure] = [
                (name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]
        return headers
