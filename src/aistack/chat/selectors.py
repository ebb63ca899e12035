"""Reads of conversations: each user sees only their own."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from aistack.chat.models import ChatMessage, Conversation
from aistack.errors import NotFound

RECENT_CONVERSATIONS = 50


def conversation_list(*, user: User) -> QuerySet[Conversation]:
    """Return the user's most recent conversations, newest first."""
    return Conversation.objects.filter(user=user).order_by("-updated_at", "-id")[
        :RECENT_CONVERSATIONS]


def conversation_get(*, user: User, conversation_id: int) -> Conversation:
    """Return one of the user's conversations; anyone else's looks missing."""
    conversation = Conversation.objects.filter(pk=conversation_id, user=user).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def conversation_messages(*, conversation: Conversation) -> QuerySet[ChatMessage]:
    """Return a conversation's turns in order."""
    return conversation.messages.order_by("id")
