"""Chat: replies from the configured chat model (feature ``chat``), and kept conversations."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import Truncator

from aistack.ai import services as ai
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import ChatRequest, ChatResult, Message
from aistack.chat.models import TITLE_MAX_CHARS, Author, ChatMessage, Conversation
from aistack.errors import Invalid
from aistack.usage.types import Attribution
from aistack.validation import one_line_title

TITLE_CHARS = 60
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


def chat_input_check(messages: Sequence[Message]) -> None:
    """Refuse a conversation longer than the chat model is sent."""
    if sum(len(message.content) for message in messages) > settings.AI_CHAT_MAX_INPUT_CHARS:
        raise Invalid(f"The conversation is too long: at most "
                      f"{settings.AI_CHAT_MAX_INPUT_CHARS:,} characters.")


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
    chat_input_check(messages)
    request, attribution = _call(messages, user_id, workspace_id)
    return ai.chat_complete(request=request, attribution=attribution)


def chat_reply_stream(
    *, messages: Sequence[Message], user_id: int | None = None, workspace_id: int | None = None
) -> ai.ChatStream:
    """Return the chat model's reply to a conversation as a stream of text."""
    chat_input_check(messages)
    request, attribution = _call(messages, user_id, workspace_id)
    return ai.chat_stream(request=request, attribution=attribution)


def _checked(text: str) -> str:
    text = text.strip()
    problem = None
    if not text:
        problem = "Write a message first."
    elif len(text) > settings.AI_CHAT_MAX_INPUT_CHARS:
        problem = f"A message has at most {settings.AI_CHAT_MAX_INPUT_CHARS:,} characters."
    elif "\x00" in text:
        problem = "A message may not contain NUL characters."
    if problem:
        raise Invalid(problem, details={"message": [problem]})
    return text


def conversation_start(*, user: User, first_message: str) -> Conversation:
    """Create a conversation titled after its first message."""
    title = Truncator(" ".join(_checked(first_message).split())).chars(TITLE_CHARS)
    return Conversation.objects.create(user=user, title=title)


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """Give a conversation the title its user chose."""
    title = one_line_title(title)
    problem = None
    if not title:
        problem = "A title cannot be empty."
    elif len(title) > TITLE_MAX_CHARS:
        problem = f"A title has at most {TITLE_MAX_CHARS} characters."
    if problem:
        raise Invalid(problem, details={"title": [problem]})
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and all its turns."""
    conversation.delete()


def _history(conversation: Conversation) -> list[Message]:
    """Return the latest turns that fit the model's input limit, oldest first."""
    # The newest turns matter most to the next reply: older ones are dropped first.
    budget = settings.AI_CHAT_MAX_INPUT_CHARS
    kept: list[Message] = []
    for role, content in conversation.messages.order_by("-id").values_list(
        "role", "content"
    ).iterator():
        budget -= len(content)
        if budget < 0:
            break
        kept.append(Message(role="user" if role == Author.USER else "assistant",
                            content=content))
    return kept[::-1]


@transaction.atomic
def _message_add(*, conversation: Conversation, role: Author, content: str, model: str = "",
                 extractive: bool = False) -> ChatMessage:
    message = ChatMessage.objects.create(conversation=conversation, role=role, content=content,
                                         model=model, extractive=extractive)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return message


def conversation_reply_stream(
    *, conversation: Conversation, text: str, workspace_id: int | None
) -> ai.ChatStream:
    """Add the user's message to the conversation and stream the model's reply to it."""
    _message_add(conversation=conversation, role=Author.USER, content=_checked(text))
    return chat_reply_stream(messages=_history(conversation), user_id=conversation.user_id,
                             workspace_id=workspace_id)


def conversation_reply_save(*, conversation: Conversation, result: ChatResult) -> ChatMessage:
    """Keep the model's finished reply as the conversation's next turn."""
    return _message_add(conversation=conversation, role=Author.ASSISTANT, content=result.text,
                        model=result.model, extractive=result.extractive)
