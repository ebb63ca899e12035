from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed


def _reset_handlers(*, setting: str, **kwargs: Any) -> None:
    # Like Django's CACHES: tests that swap the models get freshly built backends.
    from aistack.ai import chat_models, embedding_models

    for handler in (chat_models, embedding_models):
        if setting == handler.settings_name:
            handler.reset()


class AIConfig(AppConfig):
    name = "aistack.ai"
    label = "ai"

    def ready(self) -> None:
        # Connects the Celery signals that serve the local models from worker processes.
        from aistack.ai import worker  # noqa: F401
        from aistack.ai.checks import check_models

        checks.register(check_models, "ai")
        setting_changed.connect(_reset_handlers)
