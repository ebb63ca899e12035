"""Writes of chunks."""

from __future__ import annotations

from aistack.documents.models import Document
from aistack.retrieval.chunking import ChunkSpec
from aistack.retrieval.models import Chunk


def chunks_replace(*, document: Document, specs: list[ChunkSpec]) -> int:
    """Replace the document's chunks with ``specs``; call inside the job's transaction."""
    Chunk.objects.filter(document=document).delete()
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            workspace_id=document.workspace_id,
            ordinal=spec.ordinal,
            text=spec.text,
            token_count=spec.token_count,
            start_char=spec.start_char,
            end_char=spec.end_char,
            content_hash=spec.content_hash,
        )
        for spec in specs
    )
    return len(specs)
