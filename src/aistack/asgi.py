"""ASGI entry point: Django, with warm summary reads answered ahead of it, and the MCP
server at ``/mcp``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")


# Threads kept for the next requests once a burst is over; more are let go.
IDLE_REQUEST_THREADS = 32


class _RequestThread(ThreadPoolExecutor):
    """One thread, lent to one request at a time and kept for the next."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self._lock = threading.Lock()
        self._running = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._running += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._running -= 1

    @property
    def idle(self) -> bool:
        """Whether nothing runs or waits here (a call can outlive its cancelled request)."""
        with self._lock:
            return self._running == 0


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with one thread crossing per request and no new thread.

    Django's handler crosses between the event loop and the request's thread about six
    times a request: for the request-started signal, into the (synchronous) middleware,
    back out for the inner handler, in again for the view, out again, and in to close
    the response. Each crossing costs CPU and a wait for the GIL. Here one call in the
    request's thread does it all: the signal, the middleware and view, and, unless the
    body is streamed, closing the response (which hands the database connection back
    before the bytes go out). The event loop reads the body and sends the response,
    and still notices a client that leaves, as Django's does.

    Django also gives every request a thread of its own, started for it and joined
    after it. Here each request borrows a thread that earlier requests used, as a WSGI
    server's threads are: one request at a time, all of its synchronous work (the
    signals, the middleware, the view, closing the response) in that one thread, as
    Django requires. A streamed body's later synchronous work (a chat stream's model
    calls, the closing of the response) runs on a thread of the stream's own, made only
    if needed, so a stream that only waits (an event stream) holds no thread at all.
    """

    def __init__(self) -> None:
        super().__init__()
        self._idle_threads: list[_RequestThread] = []
        self._respond_in_thread = sync_to_async(self._respond, thread_sensitive=True)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)  # our middleware is synchronous

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # A streamed body's own synchronous work, if it has any, gets a thread of its own
        # for the stream's life, made when first needed. An event stream has none: it
        # waits minutes holding no thread.
        async with ThreadSensitiveContext():
            await self.handle(scope, receive, send)

    async def _respond_on_lent_thread(self, scope: dict[str, Any],
                                      body_file: IO[bytes]) -> HttpResponseBase:
        """Run ``_respond`` on a kept thread, given back as soon as the response is made."""
        thread = self._idle_threads.pop() if self._idle_threads else _RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                response: HttpResponseBase = await self._respond_in_thread(scope, body_file)
                return response
        finally:
            self._give_back(thread)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's ``handle``, with the body read within its limits
        (:mod:`aistack.request_bodies`) and the request's synchronous work in one call."""
        try:
            body_file = await body_read(scope, receive)
        except RequestAborted:
            return
        except BodyRefused as refused:
            refusal = error_response(refused.error)
            refusal["Connection"] = "close"  # the rest of the body is never read
            await self.send_response(refusal, send)
            return

        async def process_request() -> HttpResponseBase:
            response = await self._respond_on_lent_thread(scope, body_file)
            with contextlib.suppress(asyncio.CancelledError):  # the client left mid-send
                await self.send_response(response, send)
            return response

        # As Django does: a client that leaves cancels the request's task.
        processing = asyncio.create_task(process_request())
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), processing]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = processing.result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            if response.streaming:
                await sync_to_async(response.close)()
        body_file.close()

    def _respond(self, scope: dict[str, Any], body_file: IO[bytes]) -> HttpResponseBase:
        """Run in the request's thread: everything between reading the body and sending."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        created = self.create_request(scope, body_file)
        if created[0] is None:
            response = created[1]  # refused: an undecodable request or one too large
        else:
            response = self.get_response(created[0])
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # the request-finished signal: the connection goes back now
        else:
            # The thread goes back to the pool while the body streams: so do its connections.
            connections.close_all()
            if created[0] is not None:
                _request_let_go(response, created[0])
        return response

    def _give_back(self, thread: _RequestThread) -> None:
        if len(self._idle_threads) >= IDLE_REQUEST_THREADS:
            thread.shutdown(wait=False)  # the thread ends once its last call returns
        elif thread.idle:
            self._idle_threads.append(thread)
        else:
            # A call of a request cut short still runs: lend the thread again after it.
            loop = asyncio.get_running_loop()
            thread.submit(lambda: None).add_done_callback(
                lambda _: loop.call_soon_threadsafe(self._give_back, thread))


def _request_let_go(response: HttpResponseBase, request: Any) -> None:
    """Close a streamed response's request now, rather than when the stream ends.

    Django keeps the request (its headers, session, user, messages) alive until the
    response closes, for one call: closing the request's uploaded files, which close
    themselves once the request is gone. The handler closes the body itself after the
    stream. A stream that lasts minutes then holds a few hundred bytes, not tens of KB.
    """
    closers = response._resource_closers  # type: ignore[attr-defined]
    closers[:] = [closer for closer in closers if getattr(closer, "__self__", None) is not request]


# A web process runs its event loop and a thread per request, which take turns holding
# the GIL. A thread whose query has returned waits until the one running Python gives
# the GIL up: after 5 ms by default, a wait each request pays several times under load.
sys.setswitchinterval(0.001)
django.setup(set_prefix=False)
django_application = OneHopASGIHandler()

from aistack.errors import error_response  # noqa: E402
from aistack.fastpath import WarmReads  # noqa: E402  (needs Django set up)
from aistack.mcp.http import PATH as MCP_PATH  # noqa: E402  (needs Django set up)
from aistack.mcp.http import mcp_http  # noqa: E402
from aistack.request_bodies import BodyRefused, body_read  # noqa: E402  (needs Django set up)

warm_reads = WarmReads(django_application)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Send ``/mcp`` to the MCP server, and everything else to Django (warm reads first)."""
    if scope["type"] == "http" and scope["path"].rstrip("/") == MCP_PATH:
        await mcp_http(scope, receive, send)
    else:
        await warm_reads(scope, receive, send)

# Everything loaded so far (Django, the URLconf and every module it imports) lives as
# long as the process. Frozen, it is left out of garbage collection: a full collection
# walked it in about 75 ms, with every request of the process paused meanwhile.
gc.freeze()
