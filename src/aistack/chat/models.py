"""Conversations with the chat model, kept per user."""

from __future__ import annotations

from django.conf import settings
from django.db import models

TITLE_MAX_CHARS = 120


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=TITLE_MAX_CHARS)
    # The workspace whose documents each turn is answered from; none for conversations
    # kept from before chat read documents (they search the user's current workspace).
    workspace = models.ForeignKey("accounts.Workspace", null=True, blank=True,
                                  on_delete=models.CASCADE, related_name="conversations")
    # Whether turns are answered from the workspace's documents (the page's toggle).
    uses_documents = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conversation_user_updated")]

    def __str__(self) -> str:
        return self.title


class Author(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"


class ChatMessage(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Author.choices)
    content = models.TextField()
    # The model that wrote an assistant message, shown beside it; empty for the user's.
    model = models.CharField(max_length=200, blank=True)
    extractive = models.BooleanField(default=False)
    # The sources an assistant message cites, as numbered in it: n, document_id, chunk_id,
    # title and snippet (plain text), kept as they were when it was written.
    citations = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
