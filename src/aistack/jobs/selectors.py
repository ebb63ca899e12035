"""Reads of job state for the rest of the application."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet

from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.models import Job

# The latest errors shown for each kind of job that failed.
LAST_ERRORS = 3


def job_outcomes(*, kind: JobKind, object_ids: Sequence[int]) -> list[tuple[JobStatus, str]]:
    """Return the status and last error of each job of ``kind`` on ``object_ids``."""
    return [(JobStatus(status), error) for status, error in
            Job.objects.filter(kind=kind.name, object_id__in=object_ids)
            .values_list("status", "last_error")]


def jobs_open_counts(*, workspace_ids: Sequence[int]) -> dict[int, int]:
    """Return how many jobs of each of ``workspace_ids`` are pending or running."""
    counts = (Job.objects.filter(status__in=[JobStatus.PENDING, JobStatus.PROCESSING],
                                 workspace_id__in=workspace_ids)
              .values("workspace_id").annotate(n=Count("pk")).values_list("workspace_id", "n"))
    return {workspace_id: n for workspace_id, n in counts if workspace_id is not None}


def job_run_times(*, kind: JobKind, object_id: int) -> tuple[datetime | None, datetime | None]:
    """Return when the job's current run started and finished (None for not yet)."""
    started, finished = Job.objects.filter(kind=kind.name, object_id=object_id).values_list(
        "started_at", "finished_at").get()
    return started, finished


def jobs_settled(*, kind: JobKind, object_ids: QuerySet[Any, Any] | Sequence[int]) -> bool:
    """Return whether every job of ``kind`` on ``object_ids`` has completed or failed."""
    return not Job.objects.filter(kind=kind.name, object_id__in=object_ids).exclude(
        status__in=[JobStatus.COMPLETE, JobStatus.FAILED]).exists()


def jobs_changed_since(since: datetime) -> dict[JobKind, QuerySet[Job, Any]]:
    """Return, per registered kind, the ids of objects whose job runs now or finished
    after ``since`` (as a subquery)."""
    # A job's status changes only by entering "pending"/"processing", or by finishing
    # (which sets finished_at): these are all the changes a client may have missed.
    changed = Job.objects.filter(Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING])
                                 | Q(finished_at__gte=since))
    found: dict[JobKind, QuerySet[Job, Any]] = {}
    for name in changed.values_list("kind", flat=True).distinct().order_by():
        try:
            kind = kinds.get(name)
        except KeyError:
            continue  # a kind no longer declared
        found[kind] = changed.filter(kind=name).values("object_id")
    return found


@dataclass(frozen=True, kw_only=True)
class JobFailures:
    """Jobs of one task that failed in a period, with the latest errors."""

    task: str
    failed: int
    last_errors: list[tuple[datetime | None, str]]


def job_failures(*, start: datetime, end: datetime,
                 workspace_ids: Sequence[int] | None) -> list[JobFailures]:
    """Return, per task, how many jobs failed between ``start`` and ``end`` and the last
    errors; with ``workspace_ids``, only jobs on those workspaces' objects."""
    failed = Job.objects.filter(status=JobStatus.FAILED, finished_at__gte=start,
                                finished_at__lt=end)
    if workspace_ids is not None:
        in_workspaces = Q(pk__in=[])
        for kind in kinds.registered():
            model = kind.model()
            if any(field.name == "workspace" for field in model._meta.get_fields()):
                in_workspaces |= Q(kind=kind.name, object_id__in=model._default_manager
                                   .filter(workspace_id__in=workspace_ids).values("pk"))
        failed = failed.filter(in_workspaces)
    counts = dict(failed.values_list("kind").annotate(n=Count("pk")).order_by())
    return [
        JobFailures(task=kind, failed=n, last_errors=list(
            failed.filter(kind=kind).order_by("-finished_at")
            .values_list("finished_at", "last_error")[:LAST_ERRORS]))
        for kind, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def jobs_held(*, kind: JobKind, object_ids: Sequence[int], since: datetime) -> set[int]:
    """Return which of ``object_ids`` have a job of ``kind`` waiting or running, or one
    queued since ``since`` that failed (left for a person to retry)."""
    return set(Job.objects.filter(kind=kind.name, object_id__in=object_ids).filter(
        Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING])
        | Q(status=JobStatus.FAILED, enqueued_at__gte=since))
        .values_list("object_id", flat=True))


def jobs_open_exist(*, kind: JobKind, at_least: int = 1) -> bool:
    """Return whether ``at_least`` jobs of ``kind`` are waiting or running."""
    found = Job.objects.filter(kind=kind.name,
                               status__in=[JobStatus.PENDING, JobStatus.PROCESSING])
    if at_least <= 1:
        return found.exists()
    return found[:at_least].count() >= at_least  # counted no further than needed


def jobs_failed_ids(*, kind: JobKind) -> list[int]:
    """Return the objects whose job of ``kind`` failed."""
    return list(Job.objects.filter(kind=kind.name, status=JobStatus.FAILED)
                .values_list("object_id", flat=True))


def jobs_failures(*, kind: JobKind, since: datetime) -> tuple[int, str]:
    """Return how many jobs of ``kind`` queued since ``since`` failed, and the latest error."""
    failed = Job.objects.filter(kind=kind.name, status=JobStatus.FAILED, enqueued_at__gte=since)
    latest = failed.order_by("-finished_at").values_list("last_error", flat=True).first()
    return failed.count(), latest or ""
