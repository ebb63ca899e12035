"""Chat: a conversation with the configured chat model, recorded under feature ``chat``."""

from __future__ import annotations

from collections.abc import Sequence

from aistack.ai import services
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import Attribution, ChatRequest, ChatResult, Message

FEATURE = "chat"
CHAT_PROMPT = PromptTemplate(
    name="chat",
    # Short on purpose: the same prompt serves small local models, whose answers get
    # worse with long instructions, and large hosted ones.
    system=(
        "You are the assistant of aistack, a team knowledge base. Answer clearly and "
        "briefly. If you are not sure of something, say so instead of guessing."
    ),
)


def _call(
    messages: Sequence[Message], user_id: int | None, workspace_id: int | None
) -> tuple[ChatRequest, Attribution]:
    request = ChatRequest(messages=(*CHAT_PROMPT.render(), *messages))
    attribution = Attribution(feature=FEATURE, user_id=user_id, workspace_id=workspace_id,
                              prompt_version=CHAT_PROMPT.version)
    return request, attribution


def chat_reply(
    *, messages: Sequence[Message], user_id: int | None = None, workspace_id: int | None = None
) -> ChatResult:
    """Return the chat model's reply to a conversation."""
    request, attribution = _call(messages, user_id, workspace_id)
    return services.chat_complete(request=request, attribution=attribution)


def chat_reply_stream(
    *, messages: Sequence[Message], user_id: int | None = None, workspace_id: int | None = None
) -> services.ChatStream:
    """Return the chat model's reply to a conversation as a stream of text."""
    request, attribution = _call(messages, user_id, workspace_id)
    return services.chat_stream(request=request, attribution=attribution)
