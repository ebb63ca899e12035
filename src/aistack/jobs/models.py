"""Job state: PostgreSQL is the truth, Redis only delivers."""

from __future__ import annotations

from django.db import models

from aistack.jobs.kinds import JobStatus


class Job(models.Model):
    """The current run of one kind of background work on one object."""

    kind = models.CharField(max_length=64)
    object_id = models.BigIntegerField()
    # Whose work it is: each workspace's backlog waits behind smaller ones (see _priority).
    workspace_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.PENDING)
    # Bumped by every enqueue: a run that started on an older generation may not
    # finish, so an edit made while a job runs is never overwritten by stale work.
    generation = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    owner = models.CharField(max_length=200, blank=True, help_text="Worker holding the lease.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "object_id"], name="one_job_per_kind_and_object"
            )
        ]
        indexes = [
            models.Index(fields=["status", "enqueued_at"], name="job_status_enqueued"),
            models.Index(fields=["status", "lease_expires_at"], name="job_status_lease"),
            # Event streams replay what finished since a client last listened.
            models.Index(fields=["finished_at"], name="job_finished"),
            # A workspace's open jobs, counted for every message sent.
            models.Index(fields=["workspace_id"], name="job_open_workspace",
                         condition=models.Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING])),
        ]

    def __str__(self) -> str:
        return f"{self.kind}#{self.object_id} ({self.status})"
