"""Chat API: parse, authorize, delegate, render — JSON or server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Router, Schema
from pydantic import model_validator

from aistack.accounts.permissions import default_workspace
from aistack.ai.chat import chat_reply, chat_reply_stream
from aistack.ai.exceptions import AIError
from aistack.ai.services import ChatStream
from aistack.ai.types import ChatResult, Message
from aistack.errors import AppError, Invalid, NotFound, app_error_for

logger = logging.getLogger(__name__)

router = Router(tags=["chat"])


class ChatMessageIn(Schema):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class ChatIn(Schema):
    messages: list[ChatMessageIn] | None = Field(None, min_length=1)
    prompt: str | None = Field(None, min_length=1)
    stream: bool = False

    @model_validator(mode="after")
    def one_conversation(self) -> ChatIn:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("send either `messages` or `prompt`")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        return self


class ChatOut(Schema):
    answer: str
    model: str
    extractive: bool = Field(
        description="True when the answer quotes the supplied text instead of being generated."
    )


def _render(result: ChatResult) -> dict[str, object]:
    return {"answer": result.text, "model": result.model, "extractive": result.extractive}


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _error_event(error: AppError) -> str:
    return _event("error", {"error": {"code": error.code, "message": error.message}})


def _next_piece(stream: ChatStream) -> str | None:
    return next(stream, None)


async def _events(stream: ChatStream) -> AsyncIterator[str]:
    # Async on purpose: under ASGI Django buffers a sync iterator whole before sending.
    # Each read of the (blocking) provider stream runs in the request's sync thread.
    pull = sync_to_async(_next_piece)
    try:
        while (text := await pull(stream)) is not None:
            yield _event("token", {"text": text})
        if stream.result is not None:
            yield _event("done", _render(stream.result))
    except AIError as exc:
        yield _error_event(app_error_for(exc))
    except Exception:
        logger.exception("chat stream failed")
        yield _error_event(AppError("Something went wrong on our side; it has been logged."))
    finally:
        await sync_to_async(stream.close)()


@router.post("", response=ChatOut)
def chat(request: HttpRequest, payload: ChatIn) -> dict[str, object] | StreamingHttpResponse:
    user = request.user
    assert user.is_authenticated
    if payload.messages is not None:
        messages = [Message(role=m.role, content=m.content) for m in payload.messages]
    else:
        messages = [Message(role="user", content=payload.prompt or "")]
    if sum(len(m.content) for m in messages) > settings.AI_CHAT_MAX_INPUT_CHARS:
        raise Invalid(f"The conversation is too long: at most "
                      f"{settings.AI_CHAT_MAX_INPUT_CHARS} characters.")
    try:
        workspace_id: int | None = default_workspace(user=user).pk
    except NotFound:
        workspace_id = None
    if not payload.stream:
        return _render(chat_reply(messages=messages, user_id=user.pk, workspace_id=workspace_id))
    stream = chat_reply_stream(messages=messages, user_id=user.pk, workspace_id=workspace_id)
    response = StreamingHttpResponse(_events(stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Nginx would otherwise hold the events back until its buffer fills.
    response["X-Accel-Buffering"] = "no"
    return response
