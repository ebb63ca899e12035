"""Exceptions of the job runner."""

from __future__ import annotations


class JobError(Exception):
    """A job failed."""


class TransientJobError(JobError):
    """A job failed in a way that a later attempt may not: it is retried with backoff."""


class JobSuperseded(JobError):
    """The job's lease was lost or the object changed since the run began: discard its work."""
