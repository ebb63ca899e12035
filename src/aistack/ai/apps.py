from typing import Any

from asgiref.local import Local
from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed
from django.utils.connection import BaseConnectionHandler


def _reset_handlers(*, setting: str, **kwargs: Any) -> None:
    # Like Django's CACHES: tests that swap the models get freshly built backends.
    from aistack.ai import chat_models, embedding_models

    handlers: tuple[BaseConnectionHandler[Any], ...] = (chat_models, embedding_models)
    for handler in handlers:
        if setting == handler.settings_name:
            handler._settings = handler.settings = handler.configure_settings(None)  # type: ignore[attr-defined]
            handler._connections = Local(handler.thread_critical)  # type: ignore[attr-defined]


class AIConfig(AppConfig):
    name = "aistack.ai"
    label = "ai"

    def ready(self) -> None:
        from aistack.ai.checks import check_models

        checks.register(check_models, "ai")
        setting_changed.connect(_reset_handlers)
