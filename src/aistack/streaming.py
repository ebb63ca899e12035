"""Server-sent events for answers that stream from a model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from weakref import WeakKeyDictionary

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from aistack.ai.exceptions import AIError, app_error_for
from aistack.ai.services import ChatStream
from aistack.ai.types import ChatResult
from aistack.errors import AppError

logger = logging.getLogger(__name__)

# Set when the server serving from that loop starts shutting down.
_shutting_down: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
    WeakKeyDictionary()
)


def sse_event(name: str, data: object) -> str:
    """Format one server-sent event with a JSON payload."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _error_event(error: AppError) -> str:
    return sse_event("error", {"error": {"code": error.code, "message": error.message}})


def _next_piece(stream: ChatStream) -> str | None:
    return next(stream, None)


async def _events(
    stream: ChatStream, render: Callable[[ChatResult], dict[str, object]]
) -> AsyncIterator[str]:
    # Async on purpose: under ASGI Django buffers a sync iterator whole before sending.
    # Each read of the (blocking) provider stream runs in the request's sync thread.
    pull = sync_to_async(_next_piece)
    try:
        while (text := await pull(stream)) is not None:
            yield sse_event("token", {"text": text})
        if stream.result is not None:
            yield sse_event("done", await sync_to_async(render)(stream.result))
    except AIError as exc:
        yield _error_event(app_error_for(exc))
    except Exception:
        logger.exception("answer stream failed")
        yield _error_event(AppError("Something went wrong on our side; it has been logged."))
    finally:
        await sync_to_async(stream.close)()


def sse_response(
    stream: ChatStream, render: Callable[[ChatResult], dict[str, object]]
) -> StreamingHttpResponse:
    """Stream ``token`` events as the model writes, then ``done`` with ``render(result)``."""
    return event_stream_response(_events(stream, render))


def event_stream_response(events: AsyncIterator[str]) -> StreamingHttpResponse:
    """Return a response that sends ``events`` to the client as they are produced."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Nginx would otherwise hold the events back until its buffer fills.
    response["X-Accel-Buffering"] = "no"
    return response


def sse_response_of(done: dict[str, object]) -> StreamingHttpResponse:
    """Stream an answer that needed no model: its text as one token, then ``done``."""

    async def events() -> AsyncIterator[str]:
        yield sse_event("token", {"text": done["answer"]})
        yield sse_event("done", done)

    return event_stream_response(events())


def shutdown_event() -> asyncio.Event:
    """Return the event set once the server starts shutting down (one per event loop)."""
    loop = asyncio.get_running_loop()
    event = _shutting_down.get(loop)
    if event is None:
        event = _shutting_down[loop] = asyncio.Event()
    return event


def streams_end() -> None:
    """End the open streams wrapped in :func:`until_shutdown`: the server is shutting down."""
    for loop, event in list(_shutting_down.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


async def until_shutdown(events: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """Relay ``events`` until they end or the server starts shutting down.

    An endless stream would hold the server's drain until its timeout and then be cut
    mid-response. Ended cleanly instead, it lets the drain finish with the requests
    still in flight, and the browser reconnects to a server that is up.
    """
    stopping = asyncio.ensure_future(shutdown_event().wait())
    step: asyncio.Future[str] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait((step, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopping.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await step
        await events.aclose()
