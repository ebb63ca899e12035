"""The MCP server over Streamable HTTP, as an ASGI application mounted at ``/mcp``.

Stateless: every request is answered on its own, so any web process on any machine
answers any request (no session to keep on one of them), and every request is
authenticated afresh.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.http.request import split_domain_port, validate_host
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistack.accounts.permissions import token_scope
from aistack.accounts.selectors import user_for_token
from aistack.errors import (
    AppError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    error_response,
)
from aistack.mcp.server import USER_CLAIM, KnowledgeBaseServer
from aistack.observability.metrics import http_request_seconds

PATH = "/mcp"


def _user_for_token(raw: str) -> User | None:
    try:
        return user_for_token(raw=raw)
    finally:
        connections.close_all()  # this thread's: a pool thread, not the request's


class ApiTokens:
    """The SDK's token verifier over aistack's API tokens."""

    async def verify_token(self, token: str) -> AccessToken | None:
        user = await sync_to_async(_user_for_token, thread_sensitive=False)(token)
        if user is None:
            return None
        scope = token_scope(user=user)
        # The user rides along (``caller_of``): the tools need not look the token up again.
        return AccessToken(token=token, client_id=f"user:{user.pk}", subject=str(user.pk),
                           scopes=["read"] if scope is not None and scope.read_only
                           else ["read", "write"],
                           claims={USER_CLAIM: user})


class McpHttp:
    """The ASGI application for ``/mcp``: the SDK's Streamable HTTP app, one per event loop.

    The SDK's app runs a task group for its requests, entered once per event loop. The
    web server runs without ASGI lifespan events, so it is entered by the first request
    of each loop and lives as long as the loop.
    """

    def __init__(self) -> None:
        self._apps: dict[asyncio.AbstractEventLoop, ASGIApp] = {}
        self._starting: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}
        self._runs: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = _refusal(scope)
            if refusal is not None:
                await _send_error(timed_send, refusal)
                return
            app = await self._app()
            await app(scope, receive, timed_send)
        finally:
            http_request_seconds.labels(method=scope["method"], route=PATH,
                                        status=str(status)).observe(time.perf_counter() - started)

    async def _app(self) -> ASGIApp:
        loop = asyncio.get_running_loop()
        if (app := self._apps.get(loop)) is not None:
            return app
        if loop not in self._starting:
            self._starting[loop] = loop.create_future()
            run = loop.create_task(self._run(loop))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)
        await asyncio.shield(self._starting[loop])
        return self._apps[loop]

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        server = KnowledgeBaseServer(
            token_verifier=ApiTokens(),
            # No OAuth server: tokens come from the Tokens page. The issuer is only named
            # because the SDK's settings require one; no route advertises it.
            auth=AuthSettings(issuer_url=AnyHttpUrl("http://localhost"),
                              resource_server_url=None),
        )
        app = server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, json_response=True,
            max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            # Hosts and origins are checked here, against ALLOWED_HOSTS (see _refusal).
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        try:
            async with server.session_manager.run():
                self._apps[loop] = app
                self._starting[loop].set_result(None)
                await asyncio.Event().wait()  # until the loop ends
        except BaseException as exc:
            starting = self._starting.get(loop)
            if starting is not None and not starting.done():
                starting.set_exception(RuntimeError("the MCP server did not start"))
            if not isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._apps.pop(loop, None)
            self._starting.pop(loop, None)


def _refusal(scope: Scope) -> AppError | None:
    """Return why a request is refused before the MCP server sees it: a host not in
    ALLOWED_HOSTS (as Django refuses), a browser's request from a page of another
    origin, or a GET (the stream a stateless server never writes to)."""
    if scope["method"] == "GET":
        return MethodNotAllowed("This MCP server is stateless: POST each request.")
    hosts = [value for name, value in scope["headers"] if name.lower() == b"host"]
    host = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"]
                                         if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed):
        return BadRequest("The Host header is not allowed.")
    origins = [value for name, value in scope["headers"] if name.lower() == b"origin"]
    if origins and (len(origins) > 1 or urlsplit(origins[0].decode("latin-1")).netloc != host):
        return Forbidden("Requests from other sites' pages are refused.")
    return None


async def _send_error(send: Send, error: AppError) -> None:
    """Send ``error`` as every API error is sent (``aistack.errors.error_response``)."""
    response = error_response(error)
    if isinstance(error, MethodNotAllowed):
        response["Allow"] = "POST"
    headers = [(name.encode("latin-1"), value.encode("latin-1"))
               for name, value in response.items()]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


mcp_http = McpHttp()
