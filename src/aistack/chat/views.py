"""The chat page, renaming and deleting conversations, and the endpoint that streams each
reply as server-sent events."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from aistack.accounts.sessions import current_place, signed_in_user
from aistack.ai.types import ChatResult
from aistack.chat.models import TITLE_MAX_CHARS, ChatMessage, Conversation
from aistack.chat.selectors import conversation_get, conversation_list, conversation_messages
from aistack.chat.services import (
    conversation_delete,
    conversation_rename,
    conversation_reply_save,
    conversation_reply_stream,
    conversation_start,
)
from aistack.documents.selectors import document_list
from aistack.errors import Invalid
from aistack.rendering import markdown_html
from aistack.streaming import sse_response
from aistack.usage.ratelimits import ai_rate_limit_hit, write_rate_limit_hit


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A message as the page shows it."""

    message: ChatMessage
    html: str  # rendered from Markdown, sanitized, its [n] linked to its sources

    @property
    def anchor(self) -> str:
        """Return the prefix of the ids of this turn's sources in the page."""
        return _anchor(self.message)


def _anchor(message: ChatMessage) -> str:
    return f"turn-{message.pk}-source-"


def _html(message: ChatMessage) -> str:
    return markdown_html(message.content, cite_prefix=_anchor(message),
                         cited=frozenset(int(c["n"]) for c in message.citations))


def _readable_sources(user: User, messages_: list[ChatMessage]) -> None:
    """Keep in each message only the sources the user may still read.

    A member who has left a workspace, or a deleted document, takes its sources (titles
    and passages) out of the history; the replies themselves stay as they were written.
    """
    cited = {int(c["document_id"]) for message in messages_ for c in message.citations}
    readable = set(document_list(user=user).filter(pk__in=cited).values_list("pk", flat=True))
    for message in messages_:
        message.citations = [c for c in message.citations
                             if int(c["document_id"]) in readable]


def _page(request: HttpRequest, conversation: Conversation | None, *, title: str = "",
          problem: str = "") -> HttpResponse:
    user = signed_in_user(request)
    place = current_place(request)
    messages_ = list(conversation_messages(conversation=conversation)) if conversation else []
    _readable_sources(user, messages_)
    return render(request, "chat/chat.html", {
        "conversations": conversation_list(user=user),
        "conversation": conversation,
        # Safe: sanitized by nh3 (aistack.rendering), which leaves only Markdown's tags.
        "turns": [Turn(message=message, html=mark_safe(_html(message)))  # noqa: S308
                  for message in messages_],
        "workspace": (conversation.workspace if conversation and conversation.workspace
                      else place.workspace),
        "uses_documents": conversation.uses_documents if conversation else True,
        "title_typed": title, "title_problem": problem, "title_max_chars": TITLE_MAX_CHARS,
    }, status=422 if problem else 200)


@login_required
def chat_page(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    """Show the user's conversations and one of them, or an empty one to start."""
    conversation = (conversation_get(user=signed_in_user(request),
                                     conversation_id=conversation_id)
                    if conversation_id is not None else None)
    return _page(request, conversation)


def _to_change(request: HttpRequest, conversation_id: int) -> Conversation:
    """Return the user's conversation to change, counted against their write limit."""
    write_rate_limit_hit(user=request.user)
    return conversation_get(user=signed_in_user(request), conversation_id=conversation_id)


@login_required
@require_POST
def rename_conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Rename one of the user's conversations; a refused title is shown with its problem."""
    conversation = _to_change(request, conversation_id)
    title = request.POST.get("title", "")
    try:
        conversation_rename(conversation=conversation, title=title)
    except Invalid as exc:
        return _page(request, conversation, title=title, problem=exc.message)
    return redirect("conversation", conversation_id=conversation.pk)


@login_required
@require_POST
def delete_conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Delete one of the user's conversations and go back to a new one."""
    conversation = _to_change(request, conversation_id)
    conversation_delete(conversation=conversation)
    messages.success(request, f"Deleted “{conversation.title}”.")
    return redirect("chat")


@login_required
@require_POST
def chat_reply(request: HttpRequest) -> StreamingHttpResponse:
    """Add the user's message and stream the reply; the reply is kept once it is complete."""
    user = signed_in_user(request)
    ai_rate_limit_hit(user=user)
    text = request.POST.get("message", "")
    uses_documents = request.POST.get("documents") == "on"
    raw_id = request.POST.get("conversation", "")
    if raw_id and not (raw_id.isascii() and raw_id.isdigit()):
        raise Invalid("Unknown conversation.")
    workspace = current_place(request).workspace
    conversation = (conversation_get(user=user, conversation_id=int(raw_id)) if raw_id
                    else conversation_start(user=user, first_message=text, workspace=workspace,
                                            uses_documents=uses_documents))
    reply = conversation_reply_stream(conversation=conversation, text=text, user=user,
                                      workspace=workspace, uses_documents=uses_documents)

    def done(result: ChatResult) -> dict[str, object]:
        message = conversation_reply_save(conversation=conversation, result=result,
                                          sources=reply.sources)
        return {"answer": result.text, "html": _html(message), "anchor": _anchor(message),
                "citations": message.citations, "model": result.model,
                "extractive": result.extractive, "conversation": conversation.pk,
                "url": reverse("conversation", args=[conversation.pk])}

    return sse_response(reply.stream, done)
