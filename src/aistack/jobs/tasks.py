"""Periodic jobs of the job system itself."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.core.cache import cache

from aistack.jobs.services import job_reconcile

HEARTBEAT_KEY = "worker-heartbeat"


@shared_task(name="aistack.jobs.tasks.reconcile")
def reconcile() -> int:
    """Re-deliver lost or abandoned jobs."""
    return job_reconcile()


@shared_task(name="aistack.jobs.tasks.heartbeat")
def heartbeat() -> None:
    """Record that a worker is consuming the queue, for readiness checks."""
    cache.set(HEARTBEAT_KEY, time.time(), timeout=None)


@worker_ready.connect
def _ready_at_once(**_: Any) -> None:
    # Readiness should not wait for the scheduler's first heartbeat tick.
    heartbeat()
