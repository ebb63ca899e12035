"""Run a job inside a Celery task: claim, work, finish; retry transient failures."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from aistack.jobs.exceptions import JobSuperseded, TransientJobError
from aistack.jobs.kinds import JobKind
from aistack.jobs.services import JobRun, job_claim, job_fail, job_retry_later

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    TransientJobError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    TimeoutError,
    ConnectionError,
)


def retry_countdown(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: exponential, capped, jittered."""
    base = settings.JOB_RETRY_BACKOFF_SECONDS * 2**retries
    # Jitter spreads retries of jobs that failed together (say, a provider outage).
    cap = float(settings.JOB_RETRY_BACKOFF_MAX_SECONDS)
    return min(float(base), cap) * random.uniform(0.5, 1.0)  # noqa: S311


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def run_job(
    task: Task,  # type: ignore[type-arg]
    *,
    kind: JobKind,
    object_id: int,
    work: Callable[[JobRun], object],
) -> None:
    """Claim the job for ``object_id`` and run ``work``, which finishes via ``run.finishing()``."""
    run = job_claim(kind=kind, object_id=object_id)
    if run is None:
        logger.info("%s#%s: nothing to do (done, failed or owned)", kind.name, object_id)
        return
    try:
        work(run)
    except JobSuperseded:
        logger.info("%s#%s: superseded, work discarded", kind.name, object_id)
    except TRANSIENT_ERRORS as exc:
        # The budget counts attempts stored with the job, so a re-delivery by the
        # reconciler cannot reset it the way Celery's own retry counter would.
        if run.attempt > settings.JOB_MAX_RETRIES:
            job_fail(run=run, error=f"Gave up after {run.attempt} attempts: {_describe(exc)}")
            return
        countdown = retry_countdown(run.attempt - 1)
        logger.warning(
            "%s#%s: transient failure (%s), retry %d in %.1fs",
            kind.name, object_id, _describe(exc), run.attempt, countdown,
        )
        if job_retry_later(run=run, error=_describe(exc), countdown=countdown):
            raise task.retry(exc=exc, countdown=countdown,
                             max_retries=settings.JOB_MAX_RETRIES) from exc
    except Exception as exc:
        logger.exception("%s#%s failed", kind.name, object_id)
        job_fail(run=run, error=_describe(exc))
