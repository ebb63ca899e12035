from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "aistack.realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from aistack.jobs.services import job_status_changed
        from aistack.realtime.events import job_events_publish

        job_status_changed.connect(job_events_publish, dispatch_uid="realtime.job_events")
