"""Warm reads answered in the event loop, before Django's request machinery.

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

import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import resolve

from aistack.documents.api import summary_warm_json
from aistack.observability.logging import request_id_bind
from aistack.observability.metrics import http_request_seconds
from aistack.observability.middleware import REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

SUMMARY_PATH = re.compile(r"/api/v1/documents/(\d{1,18})/summary")


def _never_called(request: Any) -> HttpResponse:
    raise AssertionError("only the middleware's request and response hooks are used")


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
