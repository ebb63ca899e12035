"""Background work of retrieval: thin wrappers that claim the job and call a service."""

from __future__ import annotations

from celery import Task, shared_task

from aistack.jobs.runner import run_job
from aistack.retrieval.postings import posting_lists_merge_due
from aistack.retrieval.reindex import CHUNKS_REEMBED, documents_reembed


@shared_task(bind=True, name=CHUNKS_REEMBED.task_name)
def chunks_reembed(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Give a document's chunks vectors in the embedding space being built."""
    run_job(self, kind=CHUNKS_REEMBED, object_id=document_id,
            work=lambda run: documents_reembed(runs=[run]))


@shared_task(name="aistack.retrieval.tasks.merge_postings")
def merge_postings() -> int:
    """Fold new postings into the text index's lists where enough have gathered."""
    return posting_lists_merge_due()
