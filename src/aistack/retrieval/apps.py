from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "aistack.retrieval"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the app's job kinds (with their tasks) in every process, as Django
        # apps connect signals: once every app's models are loaded.
        from aistack.retrieval import tasks  # noqa: F401
