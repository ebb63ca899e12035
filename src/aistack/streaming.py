"""Server-sent events for answers that stream from a model."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from aistack.ai.exceptions import AIError
from aistack.ai.services import ChatStream
from aistack.ai.types import ChatResult
from aistack.errors import AppError, app_error_for

logger = logging.getLogger(__name__)


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
