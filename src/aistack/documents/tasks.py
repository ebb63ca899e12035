"""Background work on documents: thin wrappers that claim the job and call a service."""

from __future__ import annotations

from celery import Task, shared_task

from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind
from aistack.jobs.runner import run_job

DOCUMENT_INDEX = kinds.register(
    JobKind(
        name="documents.index",
        task_name="aistack.documents.tasks.document_index",
        model_label="documents.Document",
        status_field="embedding_status",
        error_field="embedding_error",
    )
)


@shared_task(
    bind=True,
    name="aistack.documents.tasks.document_index",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def document_index(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Chunk (and later embed) a document."""
    from aistack.documents.services import document_index_run

    run_job(self, kind=DOCUMENT_INDEX, object_id=document_id,
            work=lambda run: document_index_run(run=run))


def _index_parts_settled(part_ids: list[int]) -> None:
    from aistack.documents.services import index_parts_settled

    index_parts_settled(part_ids=part_ids)


DOCUMENT_INDEX_PART = kinds.register(
    JobKind(
        name="documents.index_part",
        task_name="aistack.documents.tasks.document_index_part",
        model_label="retrieval.IndexPart",
        # The document's embedding_status shows its index job, which waits for its parts.
        status_field=None,
        error_field=None,
        on_settled=_index_parts_settled,
    )
)


@shared_task(
    bind=True,
    name="aistack.documents.tasks.document_index_part",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def document_index_part(self: Task, part_id: int) -> None:  # type: ignore[type-arg]
    """Embed one part of a large document."""
    from aistack.documents.services import index_part_run

    run_job(self, kind=DOCUMENT_INDEX_PART, object_id=part_id,
            work=lambda run: index_part_run(run=run))


DOCUMENT_SUMMARY = kinds.register(
    JobKind(
        name="documents.summary",
        task_name="aistack.documents.tasks.document_summarize",
        model_label="documents.Document",
        status_field="summary_status",
        error_field="summary_error",
    )
)


@shared_task(
    bind=True,
    name="aistack.documents.tasks.document_summarize",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def document_summarize(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Write a document's summary."""
    from aistack.documents.summaries import document_summarize_run

    run_job(self, kind=DOCUMENT_SUMMARY, object_id=document_id,
            work=lambda run: document_summarize_run(run=run))
