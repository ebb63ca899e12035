"""Kinds of background work, each mirrored onto a status field of the object it serves.

A kind is declared beside the service that does its work; its state lives in
``aistack.jobs`` alone (its models, services and selectors), which no other package
writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.db import models


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"


@dataclass(frozen=True, kw_only=True)
class JobKind:
    """A kind of job: the task that runs it and the object fields that show its state."""

    name: str
    task_name: str
    model_label: str
    # The object's fields that show the job's state; None for background upkeep that
    # users need not see (re-embedding for a new model, say).
    status_field: str | None
    error_field: str | None
    # The object's field that names it, sent with its state: pages show the name the job
    # may have changed (an upload takes its title from its text).
    title_field: str | None = None
    # Called in the transaction that completes or fails jobs of this kind, with their
    # object ids: work split into parts tells the whole that a part is settled.
    on_settled: Callable[[list[int]], None] | None = None

    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label)


_registry: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Register a job kind so the reconciler can find its task."""
    _registry[kind.name] = kind
    return kind


def for_model(model_label: str) -> list[JobKind]:
    """Return the kinds of job that work on objects of ``model_label``."""
    return [kind for kind in _registry.values() if kind.model_label == model_label]


def registered() -> list[JobKind]:
    """Return every registered kind of job."""
    return list(_registry.values())


def task_names() -> set[str]:
    """Return the names of the tasks that run registered kinds of job."""
    return {kind.task_name for kind in _registry.values()}


def names_for_task(task_name: str) -> list[str]:
    """Return the names of the kinds of job that ``task_name`` runs."""
    return [kind.name for kind in _registry.values() if kind.task_name == task_name]


def get(name: str) -> JobKind:
    """Return a registered job kind."""
    return _registry[name]
