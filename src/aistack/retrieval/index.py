"""Writes of chunks, their vectors and text-search statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import connection

from aistack.retrieval.chunking import ChunkSpec
from aistack.retrieval.embedding import input_hash
from aistack.retrieval.models import Chunk, ChunkVector, EmbeddingSpace, IndexPart, StagedVector

TEXT_SEARCH_CONFIG = "english"


def _frequencies(document_ids: Sequence[int]) -> Counter[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT u.lexeme, count(*) FROM retrieval_chunk c, unnest(c.search_vector) u "
            "WHERE c.document_id = ANY(%s) GROUP BY u.lexeme",
            [list(document_ids)],
        )
        return Counter(dict(cursor.fetchall()))


def _terms_adjust(delta: Counter[str]) -> None:
    changes = sorted((lexeme, n) for lexeme, n in delta.items() if n)
    if not changes:
        return
    # One statement in lexeme order: concurrent writers lock rows in the same order
    # and so cannot deadlock on the shared counters.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO retrieval_term (lexeme, df) "
            "SELECT lexeme, n FROM unnest(%s::text[], %s::int[]) AS d(lexeme, n) "
            "ORDER BY lexeme "
            "ON CONFLICT (lexeme) DO UPDATE SET df = retrieval_term.df + EXCLUDED.df",
            [[lexeme for lexeme, _ in changes], [n for _, n in changes]],
        )


def chunks_delete(*, document_ids: Sequence[int]) -> None:
    """Delete documents' chunks and take them out of the term statistics."""
    old = _frequencies(document_ids)
    Chunk.objects.filter(document_id__in=document_ids).delete()
    _terms_adjust(Counter({lexeme: -n for lexeme, n in old.items()}))


@dataclass(frozen=True, kw_only=True)
class IndexedDocument:
    """A document's chunks with the text embedded for each and its vector."""

    document_id: int
    workspace_id: int
    specs: Sequence[ChunkSpec]
    inputs: Sequence[str]
    vectors: Mapping[EmbeddingSpace, Sequence[list[float]]]


# Chunks with their stemmed terms and BM25 length, and their postings, in one statement:
# each row is written once, and the GIN index gets each chunk's terms once.
_CHUNKS_INSERT = """
WITH new AS (
    SELECT r.*, to_tsvector(%s::regconfig, d.title || ' ' || r.text) AS terms
    FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::text[], %s::int[], %s::int[],
                %s::int[], %s::text[])
         AS r(document_id, workspace_id, ordinal, text, token_count, start_char, end_char,
              content_hash)
    JOIN documents_document d ON d.id = r.document_id
), chunks AS (
    INSERT INTO retrieval_chunk (document_id, workspace_id, ordinal, text, token_count,
                                 start_char, end_char, content_hash, search_vector,
                                 term_count, created_at)
    SELECT document_id, workspace_id, ordinal, text, token_count, start_char, end_char,
           content_hash, terms,
           coalesce((SELECT sum(cardinality(u.positions)) FROM unnest(terms) u), 0), now()
    FROM new
    RETURNING id, document_id, ordinal, workspace_id, search_vector, term_count
), postings AS (
    INSERT INTO retrieval_posting (lexeme, workspace_id, chunk_id, tf, length)
    SELECT u.lexeme, c.workspace_id, c.id, cardinality(u.positions), c.term_count
    FROM chunks c, unnest(c.search_vector) u
)
SELECT id, document_id, ordinal FROM chunks
"""


def chunks_replace(*, items: Sequence[IndexedDocument]) -> int:
    """Replace documents' chunks, vectors and term statistics (inside the jobs' transaction)."""
    document_ids = [item.document_id for item in items]
    if not document_ids:
        return 0
    old = _frequencies(document_ids)
    Chunk.objects.filter(document_id__in=document_ids).delete()
    rows = [(item.document_id, item.workspace_id, spec)
            for item in items for spec in item.specs]
    with connection.cursor() as cursor:
        cursor.execute(_CHUNKS_INSERT, [
            TEXT_SEARCH_CONFIG,
            [document_id for document_id, _, _ in rows],
            [workspace_id for _, workspace_id, _ in rows],
            [spec.ordinal for *_, spec in rows],
            [spec.text for *_, spec in rows],
            [spec.token_count for *_, spec in rows],
            [spec.start_char for *_, spec in rows],
            [spec.end_char for *_, spec in rows],
            [spec.content_hash for *_, spec in rows],
        ])
        chunk_ids = {(document_id, ordinal): chunk_id
                     for chunk_id, document_id, ordinal in cursor.fetchall()}
    delta = _frequencies(document_ids)
    delta.subtract(old)
    ChunkVector.objects.bulk_create(
        (
            ChunkVector(
                chunk_id=chunk_ids[item.document_id, spec.ordinal],
                space=space,
                workspace_id=item.workspace_id,
                input_hash=input_hash(space.model, text),
                embedding=vector,
            )
            for item in items
            for space, vectors in item.vectors.items()
            for spec, text, vector in zip(item.specs, item.inputs, vectors, strict=True)
        ),
        batch_size=1000,
    )
    # Last: the counters are shared by every workspace, and each row stays locked until
    # the transaction commits, so another workspace's index job waits no longer than it must.
    _terms_adjust(delta)
    return len(chunk_ids)


def vectors_stage(*, part: IndexPart, vectors: Mapping[EmbeddingSpace, Sequence[list[float]]]
                  ) -> None:
    """Keep the vectors an index part embedded until its document's chunks are stored."""
    StagedVector.objects.bulk_create(
        (StagedVector(part=part, space=space, input_hash=input_hash(space.model, text),
                      embedding=vector)
         for space, space_vectors in vectors.items()
         for text, vector in zip(part.inputs, space_vectors, strict=True)),
        batch_size=1000,
    )


def chunk_vectors_missing(*, space: EmbeddingSpace, document_ids: Sequence[int]) -> list[Chunk]:
    """Return the documents' chunks that have no vector in ``space`` yet."""
    return list(
        Chunk.objects.filter(document_id__in=document_ids)
        .exclude(vectors__space=space)
        .select_related("document")
        .order_by("document_id", "ordinal")
    )


def chunk_vectors_add(*, space: EmbeddingSpace, chunks: Sequence[Chunk],
                      vectors: Sequence[list[float]], inputs: Sequence[str]) -> int:
    """Store vectors for chunks in ``space``; chunks that got one meanwhile are skipped."""
    ChunkVector.objects.bulk_create(
        (ChunkVector(chunk=chunk, space=space, workspace_id=chunk.workspace_id,
                     input_hash=input_hash(space.model, text), embedding=vector)
         for chunk, text, vector in zip(chunks, inputs, vectors, strict=True)),
        batch_size=1000, ignore_conflicts=True,
    )
    return len(chunks)
