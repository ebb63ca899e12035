from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "aistack.chat"
    default_auto_field = "django.db.models.BigAutoField"
