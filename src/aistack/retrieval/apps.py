from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "aistack.retrieval"
    default_auto_field = "django.db.models.BigAutoField"
