"""ASGI entry point: Django, with warm summary reads answered ahead of it."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, running each request's middleware and view in one thread hop.

    Django builds an asynchronous chain under ASGI. Ours is synchronous below its first
    middleware, so every request crossed between the event loop and its thread four
    times: into the middleware, back out for Django's inner handler, in again for the
    view, out again. Each crossing costs CPU and a wait for the GIL. Here the whole
    chain (middleware, view, exception handling) is synchronous and runs in the
    request's thread at once. Streamed bodies are still sent from the event loop.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain: Callable[[HttpRequest], HttpResponseBase] = self._middleware_chain  # type: ignore[has-type]
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


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
