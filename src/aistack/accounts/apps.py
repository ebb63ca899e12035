from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "aistack.accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from aistack.accounts import signals  # noqa: F401
