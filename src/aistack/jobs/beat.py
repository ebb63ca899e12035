"""The scheduler's Celery application: the broker and the schedule, without Django.

The scheduler only sends the periodic jobs, by name, to the broker. Setting Django and
every task module up for that, as the workers' application does (``aistack.celery``),
would keep about 100 MB resident for nothing. This module must not import
``aistack.celery``: Celery's Django fix-up, installed by that application, would set
Django up in any application of the process.
"""

from __future__ import annotations

from celery import Celery
from django.conf import settings

from aistack.observability.logging import configure


def beat_app() -> Celery:
    """Return a Celery application that knows the broker, the schedule and our logging."""
    configure(settings.LOGGING)
    app = Celery("aistack", fixups=[], set_as_current=False)
    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        broker_connection_retry_on_startup=True,
        beat_schedule=settings.CELERY_BEAT_SCHEDULE,
        worker_hijack_root_logger=False,
    )
    return app
