"""Clean up after a document however it is deleted."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from aistack.cache import cache_forget
from aistack.documents.models import Document
from aistack.documents.selectors import document_ref_cache_key
from aistack.jobs import kinds
from aistack.jobs.services import jobs_delete
from aistack.retrieval.index import chunks_delete
from aistack.transactions import after_commit


# A signal rather than only the delete service: documents also go with their
# workspace or author (ORM cascades) and from the admin, and in every case their term
# statistics must be taken back and their jobs must not be re-sent forever.
@receiver(pre_delete, sender=Document)
def forget_document(sender: type[Document], instance: Document, **_: Any) -> None:
    chunks_delete(document_ids=[instance.pk])
    if instance.source_file and instance.source_file.name:
        storage = instance.source_file.storage
        if getattr(storage, "transactional", False):
            # In PostgreSQL: gone with the document, or kept with it on a rollback.
            storage.delete(instance.source_file.name)
        else:
            # A bucket: only once the deletion is committed, so that a rollback finds the
            # file still there.
            after_commit(storage.delete, instance.source_file.name)
    jobs_delete(kinds=kinds.for_model("documents.Document"), object_ids=[instance.pk])


@receiver(post_save, sender=Document)
@receiver(post_delete, sender=Document)
def forget_document_ref(sender: type[Document], instance: Document, created: bool = False,
                        **_: Any) -> None:
    # Only a document that was read can have an entry: a new one has none yet.
    if not created:
        cache_forget(document_ref_cache_key(instance.pk))
