"""Chat API: parse, authorize, delegate, render — JSON or server-sent events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Router, Schema, Status
from pydantic import model_validator

from aistack.accounts.permissions import default_workspace, ensure_can_change_own
from aistack.accounts.sessions import signed_in_user
from aistack.ai.types import ChatResult, Message
from aistack.chat.models import Conversation
from aistack.chat.selectors import conversation_get
from aistack.chat.services import (
    chat_reply,
    chat_reply_stream,
    conversation_delete,
    conversation_rename,
)
from aistack.errors import NotFound
from aistack.streaming import sse_response
from aistack.usage.ratelimits import ai_rate_limit_hit, write_rate_limit_hit
from aistack.validation import Text

router = Router(tags=["chat"])


class ChatMessageIn(Schema):
    role: Literal["user", "assistant"]
    content: Text = Field(min_length=1)


class ChatIn(Schema):
    messages: list[ChatMessageIn] | None = Field(None, min_length=1)
    prompt: Text | None = Field(None, min_length=1)
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


@router.post("", response=ChatOut)
def chat(request: HttpRequest, payload: ChatIn) -> dict[str, object] | StreamingHttpResponse:
    user = request.user
    assert user.is_authenticated
    ai_rate_limit_hit(user=user)
    if payload.messages is not None:
        messages = [Message(role=m.role, content=m.content) for m in payload.messages]
    else:
        messages = [Message(role="user", content=payload.prompt or "")]
    try:
        workspace_id: int | None = default_workspace(user=user).pk
    except NotFound:
        workspace_id = None
    if not payload.stream:
        return _render(chat_reply(messages=messages, user_id=user.pk, workspace_id=workspace_id))
    stream = chat_reply_stream(messages=messages, user_id=user.pk, workspace_id=workspace_id)
    return sse_response(stream, _render)


class ConversationPatch(Schema):
    title: Text = Field(description="The new title; runs of spaces become one.")


class ConversationOut(Schema):
    id: int
    title: str
    created_at: datetime
    updated_at: datetime


def _own_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    """Return the caller's conversation to change, counted against their write limit."""
    user = signed_in_user(request)
    ensure_can_change_own(user=user)
    write_rate_limit_hit(user=user)
    return conversation_get(user=user, conversation_id=conversation_id)


@router.patch("/conversations/{int:conversation_id}", response=ConversationOut)
def rename_conversation(request: HttpRequest, conversation_id: int,
                        payload: ConversationPatch) -> Conversation:
    conversation = _own_conversation(request, conversation_id)
    return conversation_rename(conversation=conversation, title=payload.title)


@router.delete("/conversations/{int:conversation_id}", response={204: None})
def delete_conversation(request: HttpRequest, conversation_id: int) -> Status[None]:
    conversation_delete(conversation=_own_conversation(request, conversation_id))
    return Status(204, None)
