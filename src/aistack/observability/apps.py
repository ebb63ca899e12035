from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "aistack.observability"

    def ready(self) -> None:
        # Connects the Celery signals that carry request ids into jobs.
        from aistack.observability import jobs  # noqa: F401
