"""Run a job inside a Celery task: claim, work, finish; retry transient failures."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from aistack.jobs.exceptions import JobSuperseded, TransientJobError
from aistack.jobs.kinds import JobKind
from aistack.jobs.services import JobRun, job_claim, job_fail, job_retry_later

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientJobError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    TimeoutError,
    ConnectionError,
)
BACKOFF_FACTOR_SECONDS = 2
BACKOFF_MAX_SECONDS = 300


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def run_job(
    task: Task,  # type: ignore[type-arg]
    *,
    kind: JobKind,
    object_id: int,
    work: Callable[[JobRun], None],
) -> None:
    """Claim the job for ``object_id`` and run ``work``; ``work`` finishes via ``run.finishing()``."""
    run = job_claim(kind=kind, object_id=object_id)
    if run is None:
        logger.info("%s#%s: nothing to do (done, failed or owned)", kind.name, object_id)
        return
    try:
        work(run)
    except JobSuperseded:
        logger.info("%s#%s: superseded, work discarded", kind.name, object_id)
    except TRANSIENT_ERRORS as exc:
        retries = task.request.retries
        if retries >= settings.JOB_MAX_RETRIES:
            job_fail(run=run, error=f"Gave up after {retries + 1} attempts: {_describe(exc)}")
            return
        countdown = get_exponential_backoff_interval(
            BACKOFF_FACTOR_SECONDS, retries, BACKOFF_MAX_SECONDS, full_jitter=True
        )
        logger.warning(
            "%s#%s: transient failure (%s), retry %d in %ss",
            kind.name, object_id, _describe(exc), retries + 1, countdown,
        )
        job_retry_later(run=run, error=_describe(exc), countdown=countdown)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.JOB_MAX_RETRIES)
    except Exception as exc:
        logger.exception("%s#%s failed", kind.name, object_id)
        job_fail(run=run, error=_describe(exc))
