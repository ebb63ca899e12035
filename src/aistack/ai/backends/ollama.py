"""A local Ollama server, through its OpenAI-compatible endpoint (``OLLAMA_BASE_URL``)."""

from __future__ import annotations

from aistack.ai.backends import openai


class ChatModel(openai.ChatModel):
    """A chat model served by Ollama."""

    provider = "ollama"
    needs_api_key = False
    limit_parameter = "max_tokens"


class EmbeddingModel(openai.EmbeddingModel):
    """An embedding model served by Ollama."""

    provider = "ollama"
    needs_api_key = False
