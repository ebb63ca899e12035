"""Background work of retrieval: thin wrappers that claim the job and call a service."""

from __future__ import annotations

from celery import Task, shared_task

from aistack.jobs.runner import run_job
from aistack.retrieval.postings import posting_lists_merge_due
from aistack.retrieval.reindex import (
    CHUNKS_REEMBED,
    SWITCH_TASK,
    documents_reembed,
    embedding_switch,
    embedding_switch_after_job,
)


@shared_task(bind=True, name=CHUNKS_REEMBED.task_name)
def chunks_reembed(self: Task, document_id: int) -> None:  # type: ignore[type-arg]
    """Give a document's chunks vectors in the embedding space being built."""
    run_job(self, kind=CHUNKS_REEMBED, object_id=document_id,
            work=lambda run: documents_reembed(runs=[run]))
    embedding_switch_after_job()


@shared_task(name=SWITCH_TASK)
def switch_embedding_model() -> dict[str, object]:
    """Move search towards the embedding model the Models page chose (every 30 s too)."""
    done = embedding_switch()
    return {"model": done.model, "queued": done.queued, "switched": done.switched}


@shared_task(name="aistack.retrieval.tasks.merge_postings")
def merge_postings() -> int:
    """Fold new postings into the text index's lists where enough have gathered."""
    return posting_lists_merge_due()
