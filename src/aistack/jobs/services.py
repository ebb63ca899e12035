"""Enqueue, claim, finish, retry and reconcile jobs.

A job's state lives in its ``Job`` row. Celery messages only say "look at this
row": a lost, duplicated or late message is harmless, because a run must first
claim the row (compare-and-set on status and lease) and may only write its results
in the same transaction that checks it still owns the current generation.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone

from aistack.celery import app as celery_app
from aistack.jobs import kinds
from aistack.jobs.broker import BrokerUnavailable, messages_taken, queue_depths
from aistack.jobs.exceptions import JobSuperseded
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.models import Job
from aistack.jobs.selectors import jobs_open_counts
from aistack.observability.metrics import job_failures
from aistack.redis.connections import redis_outage_active, redis_outage_seen
from aistack.transactions import after_commit

logger = logging.getLogger(__name__)

_ERROR_MAX_CHARS = 2000
# Jobs the reconciler sends again at most per run.
_RECONCILE_BATCH = 1000
# The broker keeps a list per message priority and serves 0 first, this one last.
_LAST_PRIORITY: int = settings.CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"][-1]
# Celery's default queue takes a workspace's first few jobs (priorities below this one);
# `aistack worker` keeps processes for it alone. The rest wait in the bulk queue.
INTERACTIVE_QUEUE, BULK_QUEUE = "celery", "bulk"
_BULK_FROM_PRIORITY = 2

job_status_changed = Signal()
"""Sent once committed when jobs change status: ``kinds``, ``object_ids``, ``status``, ``error``.

The job of each of ``kinds`` for each of ``object_ids`` reached ``status``.
"""


def worker_identity() -> str:
    """Name this process as a lease owner."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _mirror(kind: JobKind, object_ids: Sequence[int], status: JobStatus, error: str = "") -> None:
    if kind.status_field is None or kind.error_field is None:
        return
    error = error[:_ERROR_MAX_CHARS]
    kind.model()._default_manager.filter(pk__in=object_ids).update(
        **{kind.status_field: status, kind.error_field: error}
    )
    _announce([kind], object_ids, status, error)


def _announce(kinds: Sequence[JobKind], object_ids: Sequence[int], status: JobStatus,
              error: str = "") -> None:
    shown = [kind for kind in kinds if kind.status_field is not None]
    if not shown:
        return
    # Only once committed: listeners may re-read the state, and a change that is rolled
    # back is never announced. Robust: a listener's failure must not fail the job.
    after_commit(job_status_changed.send, sender=Job, kinds=shown, object_ids=list(object_ids),
                  status=status, error=error)


def _priority(open_jobs: int) -> int:
    """Return the priority of a message for a workspace with ``open_jobs`` not yet done.

    A backlog of n jobs sends its messages at about log2(n): a workspace with one or
    two jobs goes ahead of one with a hundred, which goes ahead of one with a thousand,
    so one workspace's flood delays the others by at most the jobs already running.
    """
    return min(max(open_jobs, 1).bit_length() - 1, _LAST_PRIORITY)


def _queue(priority: int) -> str:
    return INTERACTIVE_QUEUE if priority < _BULK_FROM_PRIORITY else BULK_QUEUE


def _priorities(kind: JobKind, object_ids: Sequence[int]) -> dict[int, int]:
    """Return each job's message priority from its workspace's open jobs right now."""
    workspaces = dict(Job.objects.filter(kind=kind.name, object_id__in=object_ids)
                      .values_list("object_id", "workspace_id"))
    open_jobs = jobs_open_counts(workspace_ids=[w for w in set(workspaces.values())
                                                if w is not None])
    # Work for no workspace (upkeep such as re-embedding) waits behind everyone's.
    return {object_id: _priority(open_jobs.get(workspace_id, 1)) if workspace_id is not None
            else _LAST_PRIORITY for object_id, workspace_id in workspaces.items()}


def _send(kind: JobKind, object_id: int) -> None:
    _send_all([kind], [object_id])


def _send_all(kinds: Sequence[JobKind], object_ids: Sequence[int]) -> None:
    def send() -> None:
        # One producer, and so one broker connection taken from the pool, for every message.
        with celery_app.producer_or_acquire() as producer:
            for kind in kinds:
                priorities = _priorities(kind, object_ids)
                for object_id in object_ids:
                    priority = priorities.get(object_id, 0)
                    celery_app.send_task(kind.task_name, args=[object_id], producer=producer,
                                         priority=priority, queue=_queue(priority))

    _deliver(send, count=len(kinds) * len(object_ids))


def _deliver(send: Callable[[], object], *, count: int) -> None:
    """Send messages unless Redis is down; if it is, leave them to the reconciler at once.

    The jobs are committed as pending either way: a send that cannot happen now is made
    by the reconciler once Redis is back, so the request need not wait for the broker.
    """
    if redis_outage_active():
        logger.warning("Redis is down: %d job(s) left for the reconciler to deliver", count)
        return
    try:
        send()
    except BrokerUnavailable as exc:
        redis_outage_seen()
        logger.warning("Redis is down (%s): %d job(s) left for the reconciler to deliver",
                       exc, count)


def job_enqueue(*, kind: JobKind, object_id: int, workspace_id: int | None) -> None:
    """Mark ``workspace_id``'s work pending and deliver it to a worker once committed."""
    now = timezone.now()
    with transaction.atomic():
        job, created = Job.objects.select_for_update().get_or_create(
            kind=kind.name,
            object_id=object_id,
            defaults={"status": JobStatus.PENDING, "enqueued_at": now, "generation": 1,
                      "workspace_id": workspace_id},
        )
        if not created:
            Job.objects.filter(pk=job.pk).update(
                status=JobStatus.PENDING,
                generation=F("generation") + 1,
                attempts=0,
                last_error="",
                owner="",
                lease_expires_at=None,
                enqueued_at=now,
                finished_at=None,
            )
        _mirror(kind, [object_id], JobStatus.PENDING)
    # If the process dies between commit and send, the reconciler sends it later.
    after_commit(_send, kind, object_id)


def jobs_create(*, kinds: Sequence[JobKind], object_ids: Sequence[int],
                workspace_id: int | None, deliver: bool = True) -> None:
    """Create a pending job of each kind for new objects of ``workspace_id`` (None for
    upkeep that is no workspace's); deliver them once committed."""
    now = timezone.now()
    Job.objects.bulk_create(
        (Job(kind=kind.name, object_id=object_id, status=JobStatus.PENDING, generation=1,
             enqueued_at=now, workspace_id=workspace_id)
         for kind in kinds for object_id in object_ids),
        batch_size=1000,
    )
    # The objects' status fields already read "pending" (their default): only announce it.
    _announce(kinds, object_ids, JobStatus.PENDING)
    if deliver and object_ids:
        # If the process dies between commit and send, the reconciler sends them later.
        after_commit(_send_all, kinds, object_ids)


@dataclass(frozen=True, kw_only=True)
class JobRun:
    """A claimed run of a job: the right to do its work and write its results."""

    kind: JobKind
    object_id: int
    generation: int
    owner: str
    attempt: int

    @contextmanager
    def finishing(self) -> Iterator[None]:
        """Write results and complete the job atomically, or raise JobSuperseded."""
        with jobs_finishing([self]) as owned:
            if not owned:
                raise JobSuperseded(f"{self.kind.name}#{self.object_id} changed hands")
            yield


def jobs_lease_extend(runs: Sequence[JobRun]) -> None:
    """Tell the reconciler these runs (one kind, one owner) are still alive."""
    if not runs:
        return
    with transaction.atomic():
        # Skip rather than wait: a row locked right now belongs to a transaction
        # that is finishing or releasing that very run.
        ours = list(Job.objects.select_for_update(skip_locked=True).filter(
            kind=runs[0].kind.name, owner=runs[0].owner, status=JobStatus.PROCESSING,
            object_id__in=[run.object_id for run in runs],
        ).values_list("pk", flat=True))
        Job.objects.filter(pk__in=ours).update(
            lease_expires_at=timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS))


@contextmanager
def jobs_finishing(runs: Sequence[JobRun]) -> Iterator[list[JobRun]]:
    """Yield the runs still owned, inside a transaction that completes them on exit.

    Results written inside the block commit together with the jobs' completion;
    runs whose job changed hands (lease lost, object edited) are left out, so their
    stale work is never written.
    """
    if not runs:
        yield []
        return
    kind = runs[0].kind
    assert all(run.kind == kind for run in runs), "one kind of job at a time"
    with transaction.atomic():
        current = {
            job.object_id: job
            for job in Job.objects.select_for_update()
            .filter(kind=kind.name, object_id__in=[run.object_id for run in runs])
            .order_by("pk")
        }
        owned = [
            run for run in runs
            if (job := current.get(run.object_id)) is not None
            and job.status == JobStatus.PROCESSING
            and job.owner == run.owner
            and job.generation == run.generation
        ]
        yield owned
        if owned:
            object_ids = [run.object_id for run in owned]
            Job.objects.filter(kind=kind.name, object_id__in=object_ids).update(
                status=JobStatus.COMPLETE,
                owner="",
                lease_expires_at=None,
                last_error="",
                finished_at=timezone.now(),
            )
            _mirror(kind, object_ids, JobStatus.COMPLETE)
            if kind.on_settled is not None:
                kind.on_settled(object_ids)


def jobs_claim(*, kind: JobKind, object_ids: Sequence[int], limit: int,
               owner: str | None = None, due_only: bool = False) -> list[JobRun]:
    """Take up to ``limit`` of these jobs that are waiting or whose owner's lease ran out.

    One set-based claim for a whole batch: claiming document by document costs more
    queries than the batch's own work. ``due_only`` leaves alone jobs waiting out
    their retry backoff. Jobs locked by another claimer right now are skipped.
    """
    owner = owner or worker_identity()
    now = timezone.now()
    with transaction.atomic():
        jobs = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(kind=kind.name, object_id__in=object_ids)
            .filter(
                Q(status=JobStatus.PENDING, **({"enqueued_at__lte": now} if due_only else {}))
                | Q(status=JobStatus.PROCESSING, lease_expires_at__lt=now)
            )
            .order_by("object_id")
            .only("pk", "object_id", "generation", "attempts")[:limit]
        )
        if not jobs:
            return []
        Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
            status=JobStatus.PROCESSING, owner=owner, attempts=F("attempts") + 1,
            started_at=now, lease_expires_at=now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
            updated_at=now,
        )
        _mirror(kind, [job.object_id for job in jobs], JobStatus.PROCESSING)
    return [
        JobRun(kind=kind, object_id=job.object_id, generation=job.generation, owner=owner,
               attempt=job.attempts + 1)
        for job in jobs
    ]


def job_claim(*, kind: JobKind, object_id: int, owner: str | None = None) -> JobRun | None:
    """Take the job if it is waiting or its owner's lease ran out; None if not ours to run."""
    runs = jobs_claim(kind=kind, object_ids=[object_id], limit=1, owner=owner)
    return runs[0] if runs else None


def _release(run: JobRun, *, status: JobStatus, error: str, enqueued_at: datetime) -> bool:
    with transaction.atomic():
        updated = Job.objects.filter(
            kind=run.kind.name, object_id=run.object_id, owner=run.owner,
            generation=run.generation, status=JobStatus.PROCESSING,
        ).update(
            status=status,
            owner="",
            lease_expires_at=None,
            last_error=error[:_ERROR_MAX_CHARS],
            enqueued_at=enqueued_at,
            finished_at=timezone.now() if status == JobStatus.FAILED else None,
        )
        if updated:
            _mirror(run.kind, [run.object_id], status, error)
            if status == JobStatus.FAILED and run.kind.on_settled is not None:
                run.kind.on_settled([run.object_id])
    return bool(updated)


def job_retry_later(*, run: JobRun, error: str, countdown: float) -> bool:
    """Put the job back to pending after a transient failure; False if it changed hands."""
    # enqueued_at is set to when the retry is due, so the reconciler waits for it.
    due = timezone.now() + timedelta(seconds=countdown)
    return _release(run, status=JobStatus.PENDING, error=error, enqueued_at=due)


def job_fail(*, run: JobRun, error: str) -> bool:
    """Park the job as failed with a readable reason; False if it changed hands."""
    failed = _release(run, status=JobStatus.FAILED, error=error, enqueued_at=timezone.now())
    if failed:
        job_failures.labels(task=run.kind.name).inc()
    return failed


# Owner of a job that waits for its parts: no worker renews its lease.
WAITING_FOR_PARTS = "waiting for parts"


def job_park(*, run: JobRun, seconds: float) -> bool:
    """Leave the job processing but unowned until ``job_wake`` (or ``seconds`` pass).

    For work that handed its pieces to other jobs: the last piece wakes it, and if
    that wake-up is ever lost the reconciler re-delivers it once the lease runs out.
    False if the job changed hands.
    """
    return bool(Job.objects.filter(
        kind=run.kind.name, object_id=run.object_id, owner=run.owner,
        generation=run.generation, status=JobStatus.PROCESSING,
    ).update(owner=WAITING_FOR_PARTS,
             lease_expires_at=timezone.now() + timedelta(seconds=seconds)))


def job_wake(*, kind: JobKind, object_id: int, generation: int) -> bool:
    """Hand a parked job to a worker now; False unless parked at ``generation``."""
    woken = Job.objects.filter(
        kind=kind.name, object_id=object_id, owner=WAITING_FOR_PARTS,
        generation=generation, status=JobStatus.PROCESSING,
    ).update(lease_expires_at=timezone.now())
    if woken:
        after_commit(_send, kind, object_id)
    return bool(woken)


def job_lock(*, kind: JobKind, object_id: int) -> None:
    """Lock the job's row until the transaction ends: callers deciding about it take turns."""
    Job.objects.select_for_update().filter(kind=kind.name, object_id=object_id).first()


def jobs_delete(*, kinds: Sequence[JobKind], object_ids: Sequence[int]) -> None:
    """Delete the jobs of ``kinds`` on ``object_ids``: their objects are gone or replaced."""
    Job.objects.filter(kind__in=[kind.name for kind in kinds], object_id__in=object_ids).delete()


def _lost_pending(stale: Q) -> list[Job]:
    """Return the stale pending jobs to send again: no more than the broker can have lost.

    A pending job waits for its message. A worker starts a message as soon as it takes
    it, so a job still pending long after a worker took its message lost it with that
    worker (killed, say): it is sent again first. Of the rest, when the broker queues at
    least as many messages as there are jobs waiting for one, the jobs are a backlog,
    not lost, and sending them again would only lengthen it; when it queues fewer (a
    flushed or restarted Redis, a send that never happened), the difference is sent
    again, oldest first. A lost message hidden by a duplicate shows once the backlog
    drains.
    """
    try:
        queued = sum(queue_depths().values())
        taken = messages_taken(tasks=kinds.task_names())
    except BrokerUnavailable as exc:
        logger.warning("broker unavailable; pending jobs are checked on the next run: %s", exc)
        return []
    # Each pending job waits for a message, and each running one holds its own, taken
    # and not yet acknowledged; a job waiting for its parts holds none.
    expecting = Q(status=JobStatus.PENDING) | (
        Q(status=JobStatus.PROCESSING) & ~Q(owner=WAITING_FOR_PARTS))
    held_by_workers = Q(pk__in=[])
    for task, object_ids in _by_task(taken).items():
        held_by_workers |= Q(kind__in=kinds.names_for_task(task), object_id__in=object_ids)
    held = Job.objects.filter(expecting & held_by_workers)
    orphaned = list(Job.objects.select_for_update(skip_locked=True)
                    .filter(held_by_workers & stale)
                    .order_by("enqueued_at")[:_RECONCILE_BATCH])
    missing = (Job.objects.filter(expecting).count() - queued
               - held.exclude(stale).count() - len(orphaned))
    if missing <= 0:
        return orphaned
    return orphaned + list(
        Job.objects.select_for_update(skip_locked=True).filter(stale)
        .exclude(pk__in=[job.pk for job in orphaned])
        .order_by("enqueued_at")[:min(missing, _RECONCILE_BATCH - len(orphaned))])


def _by_task(taken: set[tuple[str, int]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for task, object_id in taken:
        grouped.setdefault(task, []).append(object_id)
    return grouped


def job_reconcile() -> int:
    """Re-deliver jobs whose message was lost or whose owner died; return how many."""
    now = timezone.now()
    stale_pending = Q(
        status=JobStatus.PENDING,
        enqueued_at__lt=now - timedelta(seconds=settings.JOB_PENDING_TIMEOUT_SECONDS),
    )
    abandoned = Q(status=JobStatus.PROCESSING, lease_expires_at__lt=now)
    resent = 0
    with transaction.atomic():
        jobs = list(Job.objects.select_for_update(skip_locked=True).filter(abandoned)
                    [:_RECONCILE_BATCH]) + _lost_pending(stale_pending)
        for job in jobs:
            try:
                kind = kinds.get(job.kind)
            except KeyError:
                logger.warning("job of unknown kind %s left alone", job.kind)
                continue
            Job.objects.filter(pk=job.pk).update(
                status=JobStatus.PENDING, owner="", lease_expires_at=None, enqueued_at=now
            )
            _mirror(kind, [job.object_id], JobStatus.PENDING, job.last_error)
            after_commit(_send, kind, job.object_id)
            resent += 1
    if resent:
        logger.info("reconciler re-delivered %d job(s)", resent)
    return resent
