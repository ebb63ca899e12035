"""Background work of retrieval: thin wrappers that claim the job and call a service."""

from __future__ import annotations

from celery import Task, shared_task

from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind
from aistack.jobs.runner import run_job

CHUNKS_REEMBED = kinds.register(
    JobKind(
        name="retrieval.reembed",
        task_name="aistack.retrieval.tasks.chunks_reembed",
        model_label="documents.Document",
        # Re-embedding for a new model is upkeep: the document's status stays as it is.
        status_field=None,
        error_field=None,
    )
)


@shared_task(
    bind=True,
    name="aistack.retrieval.tasks.chunks_reembed",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def chunks_reembed(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Give a document's chunks vectors in the embedding space being built."""
    from aistack.retrieval.reindex import documents_reembed

    run_job(self, kind=CHUNKS_REEMBED, object_id=document_id,
            work=lambda run: documents_reembed(runs=[run]))
