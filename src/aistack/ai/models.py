"""The models connected from the Models page, kept in PostgreSQL.

One row at most. While it names a chat model, that model wins over the environment's
AI_CHAT_MODEL and AI_FALLBACK_CHAT_MODELS (see ``aistack.ai.setup``); "Use the
environment's" blanks it, which gives them back. Its embedding model, when set, wins
over AI_EMBEDDING_MODEL the same way. Every change raises its revision, which is
how processes tell a newer setup from an older one. Its API key is stored encrypted
(``aistack.ai.secrets``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

SETUP_ID = 1


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OLLAMA = "ollama", "Ollama"
    COMPATIBLE = "compatible", "Any OpenAI-compatible server"


class ModelSetup(models.Model):
    provider = models.CharField(max_length=20, choices=Provider.choices, blank=True)
    # Empty: the provider's own address (or OLLAMA_BASE_URL's).
    base_url = models.CharField(max_length=500, blank=True)
    # Fernet token of the key, made with a key derived from SECRET_KEY; never shown back.
    api_key_encrypted = models.TextField(blank=True)
    # Empty: the environment's models apply.
    chat_model = models.CharField(max_length=200, blank=True)
    # Tried in order when the chat model fails: `provider:model`, comma-separated; they
    # use the environment's keys and addresses.
    fallbacks = models.CharField(max_length=1000, blank=True)
    # Empty: AI_EMBEDDING_MODEL. Else `local:<name>` (built in) or `page:<sdk>:<name>`, a
    # model reached over this row's connection. Changing it re-embeds every document.
    embedding_model = models.CharField(max_length=300, blank=True)
    # The width of its vectors, as a call to it measured when it was saved.
    embedding_dimensions = models.PositiveIntegerField(default=0)
    # When the page last chose the embedding model (empty: never, and search follows
    # `aistack reindex` alone); from then on, workers switch search by themselves.
    embedding_chosen_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=SETUP_ID),
                                              name="model_setup_is_one_row")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.chat_model}"
