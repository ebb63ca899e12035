"""Run a job inside a Celery task: claim, work, finish; retry transient failures."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress

from celery import Task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
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
        while not stop.wait(settings.JOB_LEASE_SECONDS / 3):
            try:
                jobs_lease_extend(runs)
            except DatabaseError as exc:  # a lease has two more beats before it runs out
                logger.warning("renewing leases failed, to be tried again: %s", exc)
            finally:
                # Back to the pool between beats: a process's threads that hold one for
                # their whole run (an ingest's three) leave few to spare.
                connection.close()

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
    ahead: bool = False,
) -> None:
    """Run these jobs in this process, in batches, until each is complete or failed.

    Workers may take some of them meanwhile: a job is claimed by one process only,
    so this finishes whether or not workers are running and never duplicates work.
    When ``work`` returns a callable, that is the rest of the batch's work, and a
    thread with a connection of its own does it while this one goes on with the next
    batch: say, one batch is stored while the next is embedded. With ``ahead``, ``work``
    is a batch's first step (say, reading and chunking its documents), done by a thread
    of its own a batch ahead: the callable it returns runs here (the model) and returns
    the rest, as ``work`` does without ``ahead``. Inside a transaction this thread does
    it all, as other connections would not see what the transaction holds.
    """
    remaining = set(object_ids)
    inline = connection.in_atomic_block
    with _Finisher(inline=inline) as finisher, _Ahead(
            kind=kind, batch=batch, work=work, ahead=ahead, inline=inline) as reader:
        reader.ask(sorted(remaining))
        # Until the last batch asked for is taken: one read ahead is never left behind.
        while reader.outstanding:
            runs, step = reader.take()
            if runs:
                # The next batch is read while this one is worked on.
                reader.ask(sorted(remaining))
                rest = _started(runs, step) if step is not None else None
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
            if not runs and remaining:
                if not done:
                    time.sleep(poll_seconds)
                reader.ask(sorted(remaining))


# A claimed batch and what remains of its work (None: nothing, or none claimed).
Batch = tuple[list[JobRun], Callable[[], object] | None]


def _started(runs: list[JobRun], work: Callable[[], object]) -> Callable[[], object] | None:
    """Attempt ``work`` for the runs; return the rest of the work, if it left some."""
    rest: list[object] = []
    _attempt(runs, lambda: rest.append(work()))
    return rest[0] if rest and callable(rest[0]) else None


class _Ahead:
    """Claims batches; with ``ahead``, claims the next and does its first step in a thread
    of its own while the caller works on the batch before: one batch ahead at most.

    :meth:`ask` claims a batch among these object ids; :meth:`take` returns the batch asked
    for last (no runs if none could be claimed) and what remains of its work. Without
    ``ahead``, or inline (in a transaction), :meth:`take` claims (and does the first step)
    in the caller's thread. A daemon, as the finishing thread is (see there).
    """

    def __init__(self, *, kind: JobKind, batch: int, work: Callable[[list[JobRun]], object],
                 ahead: bool, inline: bool) -> None:
        self.kind = kind
        self.batch = batch
        self.work = work
        self.first_step = ahead  # ``work`` is a first step, done as the batch is claimed
        self.threaded = ahead and not inline
        self.asked: queue.Queue[list[int] | None] = queue.Queue()
        self.ready: queue.Queue[Batch | BaseException] = queue.Queue()
        self.taken = threading.Event()
        self.pending: list[int] = []
        self.outstanding = False  # a batch was asked for and not taken yet
        self.thread = threading.Thread(target=self._serve, name="jobs-ahead", daemon=True)

    def __enter__(self) -> _Ahead:
        if self.threaded:
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.threaded:
            # Left by an error: a batch read ahead and never taken is dropped, and its
            # jobs' leases hand it back.
            self.taken.set()
            self.asked.put(None)

    def ask(self, object_ids: list[int]) -> None:
        self.outstanding = True
        if self.threaded:
            self.asked.put(object_ids)
        else:
            self.pending = object_ids

    def take(self) -> Batch:
        self.outstanding = False
        if not self.threaded:
            return self._read(self.pending)
        found = self.ready.get()
        self.taken.set()
        if isinstance(found, BaseException):
            raise found
        return found

    def _read(self, object_ids: list[int]) -> Batch:
        """Claim a batch, and do its first step if ``work`` is one."""
        runs = jobs_claim(kind=self.kind, object_ids=object_ids, limit=self.batch,
                          due_only=True)
        if not runs:
            return [], None
        if self.first_step:
            return runs, _started(runs, lambda: self.work(runs))
        return runs, lambda: self.work(runs)

    def _serve(self) -> None:
        try:
            while (asked := self.asked.get()) is not None:
                try:
                    runs, step = self._read(asked)
                except BaseException as exc:
                    self.ready.put(exc)
                    return
                self.taken.clear()
                # Its leases are renewed here until the caller takes it: the batch before
                # may keep the model busy for longer than a lease.
                with lease_kept(runs) if runs else nullcontext():
                    self.ready.put((runs, step))
                    self.taken.wait()
        finally:
            connection.close()  # this thread's own connection


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
