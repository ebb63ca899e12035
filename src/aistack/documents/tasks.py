"""Background work on documents: thin wrappers that claim the job and call a service."""

from __future__ import annotations

from celery import Task, shared_task

from aistack.documents.indexing import (
    DOCUMENT_INDEX,
    DOCUMENT_INDEX_PART,
    document_index_run,
    index_part_run,
    vector_index_build_when_idle,
)
from aistack.documents.summaries import DOCUMENT_SUMMARY, document_summarize_run
from aistack.jobs.runner import run_job


@shared_task(bind=True, name=DOCUMENT_INDEX.task_name)
def document_index(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Parse (uploads), chunk, embed and store a document for search."""
    run_job(self, kind=DOCUMENT_INDEX, object_id=document_id,
            work=lambda run: document_index_run(run=run))


@shared_task(bind=True, name=DOCUMENT_INDEX_PART.task_name)
def document_index_part(self: Task, part_id: int) -> None:  # type: ignore[type-arg]
    """Embed one part of a large document."""
    run_job(self, kind=DOCUMENT_INDEX_PART, object_id=part_id,
            work=lambda run: index_part_run(run=run))


@shared_task(bind=True, name=DOCUMENT_SUMMARY.task_name)
def document_summarize(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Write a document's summary."""
    run_job(self, kind=DOCUMENT_SUMMARY, object_id=document_id,
            work=lambda run: document_summarize_run(run=run))


@shared_task(name="aistack.documents.tasks.build_vector_index")
def build_vector_index() -> bool:
    """Build the active space's vector index once it is due (every 30 s)."""
    return vector_index_build_when_idle()
