"""Run a job inside a Celery task: claim, work, finish; retry transient failures."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from redis.exceptions import ConnectionError as RedisConnectionError

from aistack.jobs.exceptions import JobSuperseded, TransientJobError
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.models import Job
from aistack.jobs.services import (
    JobRun,
    job_claim,
    job_fail,
    job_retry_later,
    jobs_claim,
    jobs_lease_extend,
)
from aistack.observability.metrics import job_seconds

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


@contextmanager
def lease_kept(runs: Sequence[JobRun]) -> Iterator[None]:
    """Renew the runs' leases in the background while the block runs.

    Work that outlasts its lease (a slow model, a big PDF) would otherwise be handed
    to another worker by the reconciler and done twice.
    """
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.JOB_LEASE_SECONDS / 3):
                jobs_lease_extend(runs)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name="job-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _settle(runs: Sequence[JobRun], exc: Exception) -> float | None:
    """Record a failed attempt: fail permanent errors and exhausted jobs, else retry later.

    Returns the retry delay when at least one run is to be retried.
    """
    if not isinstance(exc, TRANSIENT_ERRORS):
        for run in runs:
            job_fail(run=run, error=_describe(exc))
        return None
    countdown: float | None = None
    for run in runs:
        # The budget counts attempts stored with the job, so a re-delivery by the
        # reconciler cannot reset it the way Celery's own retry counter would.
        if run.attempt > settings.JOB_MAX_RETRIES:
            job_fail(run=run, error=f"Gave up after {run.attempt} attempts: {_describe(exc)}")
            continue
        delay = retry_countdown(run.attempt - 1)
        logger.warning("%s#%s: transient failure (%s), retry %d in %.1fs",
                       run.kind.name, run.object_id, _describe(exc), run.attempt, delay)
        if job_retry_later(run=run, error=_describe(exc), countdown=delay):
            countdown = delay
    return countdown


def _attempt(runs: Sequence[JobRun], work: Callable[[], object]) -> float | None:
    """Run ``work`` for claimed runs; return a retry delay if it failed transiently."""
    started = time.monotonic()
    outcome, countdown = "complete", None
    try:
        with lease_kept(runs):
            work()
    except JobSuperseded:
        outcome = "superseded"
        logger.info("%s: superseded, work discarded", ", ".join(
            f"{run.kind.name}#{run.object_id}" for run in runs))
    except Exception as exc:
        if not isinstance(exc, TRANSIENT_ERRORS):
            logger.exception("%s failed", ", ".join(
                f"{run.kind.name}#{run.object_id}" for run in runs))
        countdown = _settle(runs, exc)
        outcome = "failed" if countdown is None else "retry"
    job_seconds.labels(task=runs[0].kind.name, outcome=outcome).observe(
        time.monotonic() - started)
    return countdown


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
    countdown = _attempt([run], lambda: work(run))
    if countdown is not None:
        raise task.retry(countdown=countdown, max_retries=settings.JOB_MAX_RETRIES)


def jobs_work_through(
    *, kind: JobKind, object_ids: Sequence[int], work: Callable[[list[JobRun]], object],
    progress: Callable[[int], None], batch: int = 16, poll_seconds: float = 0.5,
) -> None:
    """Run these jobs in this process, in batches, until each is complete or failed.

    Workers may take some of them meanwhile: a job is claimed by one process only,
    so this finishes whether or not workers are running and never duplicates work.
    When ``work`` returns a callable, that is the rest of the batch's work, and a
    thread with a connection of its own does it while this one goes on with the next
    batch: say, one batch is stored while the next is embedded. Inside a transaction
    this thread does it, as other connections would not see what the transaction holds.
    """
    remaining = set(object_ids)
    with _Finisher(inline=connection.in_atomic_block) as finisher:
        while remaining:
            runs = jobs_claim(kind=kind, object_ids=sorted(remaining), limit=batch,
                              due_only=True)
            if runs:
                rest = _started(runs, work)
                if rest is not None:
                    finisher.give(runs, rest)
            else:
                finisher.wait()  # what is being finished may be all that is left
            known = dict(Job.objects.filter(kind=kind.name, object_id__in=remaining)
                         .values_list("object_id", "status"))
            # A deleted object takes its job with it: nothing is left to wait for.
            done = {object_id for object_id in remaining
                    if known.get(object_id, JobStatus.COMPLETE) in (JobStatus.COMPLETE,
                                                                     JobStatus.FAILED)}
            if done:
                progress(len(done))
                remaining -= done
            elif not runs:
                time.sleep(poll_seconds)


def _started(runs: list[JobRun], work: Callable[[list[JobRun]], object]
             ) -> Callable[[], object] | None:
    """Attempt ``work`` for the runs; return the rest of the work, if it left some."""
    rest: list[object] = []
    _attempt(runs, lambda: rest.append(work(runs)))
    return rest[0] if rest and callable(rest[0]) else None


class _Finisher:
    """Finishes batches in a thread of its own, one at a time, one more waiting at most.

    A daemon: a process stopped by Ctrl-C or a signal does not wait for the batch it is
    storing, whose transaction then rolls back and whose jobs' leases hand them back.
    The model runs in the caller's thread alone, as ONNX Runtime's work in a thread
    the interpreter does not wait for would outlive the objects it uses.
    """

    def __init__(self, *, inline: bool) -> None:
        self.inline = inline
        self.queue: queue.Queue[tuple[list[JobRun], Callable[[], object]] | None] = (
            queue.Queue(maxsize=1))
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="jobs-finisher", daemon=True)

    def __enter__(self) -> _Finisher:
        if not self.inline:
            self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self.inline:
            return
        if kind is not None:
            # It ends after the batch it is on, unwaited for (see the class); a batch
            # waiting behind that one is dropped, and its jobs' leases hand them back.
            with suppress(queue.Empty):
                self.queue.get_nowait()
                self.queue.task_done()
            self.queue.put_nowait(None)
            return
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def give(self, runs: list[JobRun], finish: Callable[[], object]) -> None:
        if self.inline:
            _attempt(runs, finish)
            return
        self._raise()
        self.queue.put((runs, finish))
        # Until the finishing thread takes them, nothing else renews their leases.
        jobs_lease_extend(runs)

    def wait(self) -> None:
        if not self.inline:
            self.queue.join()
            self._raise()

    def _raise(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _serve(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                try:
                    if self.failure is None:
                        _attempt(*item)
                except BaseException as exc:
                    self.failure = exc
                finally:
                    self.queue.task_done()
        finally:
            connection.close()  # this thread's own connection
