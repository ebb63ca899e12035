"""Chat: replies from the configured chat model (feature ``chat``), and kept conversations.

A conversation in a workspace answers each turn from its documents, as ask does: the
passages the turn (with the user's previous turn, for a follow-up) retrieves are numbered
in the prompt, the reply cites them, and the message keeps what it cited. The built-in
extractive model answers from those passages too, so chat over documents works offline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import Truncator

from aistack.accounts.models import Workspace
from aistack.accounts.permissions import workspace_ids_for_read
from aistack.ai import services as ai
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import ChatRequest, ChatResult, Message
from aistack.chat.models import TITLE_MAX_CHARS, Author, ChatMessage, Conversation
from aistack.errors import Invalid
from aistack.rendering import markdown_text
from aistack.retrieval.answers import (
    Source,
    citations_dropped,
    sources_cited,
    sources_context,
    sources_find,
    sources_numbered,
)
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
CHAT_SOURCES_PROMPT = PromptTemplate(
    name="chat-sources",
    # Ask's rules for citing, in a conversation: earlier turns are context, not sources.
    system=(
        "You are the assistant of aistack, a team knowledge base. Answer the user's last "
        "message from the numbered sources below, clearly and briefly. After each "
        "statement, cite the sources it rests on in square brackets, like [1] or [2][3]. "
        "If the sources do not answer it, say so instead of guessing.\n\nSources:\n$sources"
    ),
)
# How many passages a turn may draw on (ask's default).
SOURCES_PER_TURN = 6
# A cited passage is kept with the message as this much plain text.
SNIPPET_CHARS = 240
# A turn this short, or opening like "and ...", or referring back ("it", "they", "that
# one"), continues the previous one: it is searched for together with the user's previous
# turn ("and how do I prepare for it?"). Any other turn is searched for as it is.
FOLLOW_UP_MAX_WORDS = 2
_FOLLOW_UP = re.compile(
    r"^\s*(?:and|also|so|then|what about|how about)\b"
    r"|\b(?:it|its|it's|they|them|their|theirs|those|these|that one|this one|the former"
    r"|the latter|he|she|him|his|her)\b", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A reply on its way, and the passages it was given to cite."""

    stream: ai.ChatStream
    sources: tuple[Source, ...]


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


def conversation_start(*, user: User, first_message: str, workspace: Workspace | None = None,
                       uses_documents: bool = True) -> Conversation:
    """Create a conversation in ``workspace``, titled after its first message."""
    title = Truncator(" ".join(_checked(first_message).split())).chars(TITLE_CHARS)
    return Conversation.objects.create(user=user, title=title, workspace=workspace,
                                       uses_documents=uses_documents)


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


def _history(conversation: Conversation, *, budget: int) -> list[Message]:
    """Return the latest turns that fit in ``budget`` characters, oldest first.

    Earlier replies lose their [n]: a turn numbers its own sources, and an old [2] would
    cite whatever this turn's prompt numbers 2. The user's words are kept as written.
    """
    # The newest turns matter most to the next reply: older ones are dropped first.
    kept: list[Message] = []
    for role, content in conversation.messages.order_by("-id").values_list(
        "role", "content"
    ).iterator():
        budget -= len(content)
        if budget < 0:
            break
        kept.append(Message(role="user", content=content) if role == Author.USER else
                    Message(role="assistant", content=citations_dropped(content)))
    return kept[::-1]


def chat_query(earlier: Sequence[Message], text: str) -> str:
    """Return what to search the documents for: the turn, with the user's previous turn
    when this one reads as a follow-up to it (short, or saying "it", "that", "they"...)."""
    previous = next((m.content for m in reversed(earlier) if m.role == "user"), None)
    follows = len(text.split()) <= FOLLOW_UP_MAX_WORDS or _FOLLOW_UP.search(text)
    return f"{previous}\n{text}" if previous and follows else text


@transaction.atomic
def _message_add(*, conversation: Conversation, role: Author, content: str, model: str = "",
                 extractive: bool = False,
                 citations: list[dict[str, object]] | None = None) -> ChatMessage:
    message = ChatMessage.objects.create(conversation=conversation, role=role, content=content,
                                         model=model, extractive=extractive,
                                         citations=citations or [])
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return message


def conversation_reply_stream(
    *, conversation: Conversation, text: str, user: User, workspace: Workspace,
    uses_documents: bool,
) -> Reply:
    """Add the user's message to the conversation and stream the model's reply to it.

    The turn belongs to the conversation's workspace (the user's current ``workspace`` for
    one kept from before chat read documents), which the user must still be able to read:
    it is charged there and, with ``uses_documents``, answered from its documents.
    """
    text = _checked(text)
    searched = conversation.workspace or workspace
    # Also without documents: the turn is charged to the workspace, which a member who
    # has left may no longer spend.
    workspace_ids = workspace_ids_for_read(user=user, workspace_id=searched.pk)
    earlier = _history(conversation, budget=settings.AI_CHAT_MAX_INPUT_CHARS - len(text))
    messages = [*earlier, Message(role="user", content=text)]
    chat_input_check(messages)
    _message_add(conversation=conversation, role=Author.USER, content=text)
    if conversation.uses_documents != uses_documents:
        conversation.uses_documents = uses_documents
        conversation.save(update_fields=["uses_documents", "updated_at"])
    attribution = Attribution(feature=FEATURE, user_id=conversation.user_id,
                              workspace_id=searched.pk,
                              prompt_version=CHAT_SOURCES_PROMPT.version)
    sources: tuple[Source, ...] = ()
    question = None
    if uses_documents:
        question = chat_query(earlier, text)
        sources = sources_find(workspace_ids=workspace_ids, query=question,
                               k=SOURCES_PER_TURN, attribution=attribution)
    # Nothing retrieved: the plain chat prompt, so a language model may still answer a
    # greeting (the extractive model says it has nothing to quote).
    prompt = CHAT_SOURCES_PROMPT if sources else CHAT_PROMPT
    system = prompt.render(sources=sources_numbered(sources)) if sources else prompt.render()
    request = ChatRequest(messages=(*system, *messages), context=sources_context(sources),
                          question=question)
    return Reply(stream=ai.chat_stream(request=request, attribution=replace(
        attribution, prompt_version=prompt.version)), sources=sources)


def _citation(source: Source) -> dict[str, object]:
    # The passage's opening words, as a page shows them (without its Markdown).
    return {"n": source.n, "document_id": source.document_id, "chunk_id": source.chunk_id,
            "title": source.title,
            "snippet": Truncator(markdown_text(source.text)).chars(SNIPPET_CHARS)}


def conversation_reply_save(*, conversation: Conversation, result: ChatResult,
                            sources: Sequence[Source] = ()) -> ChatMessage:
    """Keep the model's finished reply as the conversation's next turn, with what it cites."""
    return _message_add(conversation=conversation, role=Author.ASSISTANT, content=result.text,
                        model=result.model, extractive=result.extractive,
                        citations=[_citation(s) for s in sources_cited(sources, result.text)])
