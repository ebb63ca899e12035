from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "aistack.documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from aistack.documents import signals  # noqa: F401
