from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "aistack.documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's idiom: an app connects its signals and registers its job kinds (with
        # their tasks) once every app's models are loaded, in every process.
        from aistack.documents import signals, tasks  # noqa: F401
