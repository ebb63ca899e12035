"""Give every request an id for its logs and jobs, and time it by URL pattern."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from aistack.observability.logging import request_id_bind
from aistack.observability.metrics import http_request_seconds

REQUEST_ID_HEADER = "X-Request-ID"
# Requests that resolve to no URL pattern share one label, whatever their path.
UNMATCHED_ROUTE = "unmatched"

GetResponse = Callable[[HttpRequest], Any]


class ObservabilityMiddleware:
    """Bind the request id (``X-Request-ID`` or a new one) and record the request's latency.

    Async-capable, so under ASGI it runs in the request's own task: the id it binds
    stays in the context of everything the request does, its streamed body included.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        request_id, started = self._begin(request)
        response: HttpResponseBase = self.get_response(request)
        return self._end(request, response, request_id, started)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id, started = self._begin(request)
        response: HttpResponseBase = await self.get_response(request)
        return self._end(request, response, request_id, started)

    @staticmethod
    def _begin(request: HttpRequest) -> tuple[str, float]:
        request_id = request_id_bind(request.headers.get(REQUEST_ID_HEADER),
                                     method=request.method, path=request.path)
        return request_id, time.perf_counter()

    @staticmethod
    def _end(request: HttpRequest, response: HttpResponseBase, request_id: str,
             started: float) -> HttpResponseBase:
        match = request.resolver_match
        http_request_seconds.labels(
            method=request.method or "", route=match.route if match else UNMATCHED_ROUTE,
            status=str(response.status_code),
        ).observe(time.perf_counter() - started)
        response[REQUEST_ID_HEADER] = request_id
        return response
