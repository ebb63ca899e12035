"""The system check that refuses to start with a model that cannot work."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error

from aistack.ai import InvalidModelError, ModelHandler, model_spec
from aistack.ai.base import BaseChatModel, BaseEmbeddingModel, BaseModel

# Where each setting comes from, and what a right value looks like.
_HINTS = {
    "AI_CHAT_MODELS": "Set AI_CHAT_MODEL and AI_FALLBACK_CHAT_MODELS to provider:model values, "
    "for example local:extractive, openai:gpt-4.1-mini or anthropic:claude-haiku-4-5.",
    "AI_EMBEDDING_MODELS": "Set AI_EMBEDDING_MODEL to provider:model, for example "
    "local:all-MiniLM-L6-v2-int8 or openai:text-embedding-3-small.",
}


def check_models(**kwargs: Any) -> list[CheckMessage]:
    """Report every configured model that cannot be built or is missing what it needs."""
    errors: list[CheckMessage] = []
    # Fresh handlers: the check must not leave half-built backends in the shared ones.
    handlers: tuple[ModelHandler[Any], ...] = (
        ModelHandler(settings_name="AI_CHAT_MODELS", base=BaseChatModel),
        ModelHandler(settings_name="AI_EMBEDDING_MODELS", base=BaseEmbeddingModel),
    )
    for handler in handlers:
        setting = handler.settings_name or ""
        for alias, params in handler.settings.items():
            spec = model_spec(params)
            try:
                backend: BaseModel = handler[alias]
            except InvalidModelError as exc:
                problems = [str(exc)]
            else:
                problems = backend.check()
            errors.extend(
                Error(
                    f"AI model {spec!r} ({setting}[{alias!r}]) cannot be used: {problem}.",
                    hint=_HINTS.get(setting),
                    id="aistack.ai.E001",
                )
                for problem in problems
            )
    chat_aliases = settings.AI_CHAT_MODELS
    unknown = [alias for alias in settings.AI_CHAT_FALLBACKS if alias not in chat_aliases]
    if unknown:
        errors.append(Error(f"AI_CHAT_FALLBACKS names unknown aliases: {', '.join(unknown)}.",
                            id="aistack.ai.E002"))
    return errors
