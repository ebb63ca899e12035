"""ASGI entry point: Django, with warm summary reads answered ahead of it."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

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
    """Django's ASGI handler with fewer thread crossings and no new thread per request.

    Django builds an asynchronous chain under ASGI. Ours is synchronous below its first
    middleware, so every request crossed between the event loop and its thread four
    times: into the middleware, back out for Django's inner handler, in again for the
    view, out again. Each crossing costs CPU and a wait for the GIL. Here the whole
    chain (middleware, view, exception handling) is synchronous and runs in the
    request's thread at once. Streamed bodies are still sent from the event loop.

    Django also gives every request a thread of its own, started for it and joined
    after it. Here each request borrows a thread that earlier requests used, as a WSGI
    server's threads are: one request at a time, all of its synchronous work (the
    signals, the view, closing the response, a stream's database reads) in that one
    thread, as Django requires.
    """

    def __init__(self) -> None:
        super().__init__()
        self._idle_threads: list[_RequestThread] = []

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain: Callable[[HttpRequest], HttpResponseBase] = self._middleware_chain  # type: ignore[has-type]
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle_threads.pop() if self._idle_threads else _RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self._give_back(thread)

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


# A web process runs its event loop and a thread per request, which take turns holding
# the GIL. A thread whose query has returned waits until the one running Python gives
# the GIL up: after 5 ms by default, a wait each request pays several times under load.
sys.setswitchinterval(0.001)
django.setup(set_prefix=False)
django_application = OneHopASGIHandler()

from aistack.fastpath import WarmReads  # noqa: E402  (needs Django set up)

application = WarmReads(django_application)

# Everything loaded so far (Django, the URLconf and every module it imports) lives as
# long as the process. Frozen, it is left out of garbage collection: a full collection
# walked it in about 75 ms, with every request of the process paused meanwhile.
gc.freeze()
