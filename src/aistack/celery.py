"""The Celery application: Redis delivers jobs, PostgreSQL keeps their state."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")

app = Celery("aistack")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
