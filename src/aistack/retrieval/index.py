"""Writes of chunks, their vectors and text-search statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db import connection

from aistack.postgresql.binding import bound_cursor
from aistack.replicas import workspaces_writing, workspaces_written
from aistack.retrieval.chunking import ChunkSpec
from aistack.retrieval.embedding import input_hash
from aistack.retrieval.fields import vector_text
from aistack.retrieval.models import Chunk, ChunkVector, EmbeddingSpace, IndexPart, StagedVector
from aistack.transactions import after_commit

TEXT_SEARCH_CONFIG = "english"


# What a set of documents adds to their workspaces' statistics: for each workspace, the
# chunks containing each term, and the chunks and their summed lengths.
Frequencies = Counter[tuple[int, str]]
Sizes = Counter[tuple[int, str]]


def _frequencies(document_ids: Sequence[int]) -> tuple[Frequencies, Sizes]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.workspace_id, u.lexeme, count(*) "
            "FROM retrieval_chunk c, unnest(c.search_vector) u "
            "WHERE c.document_id = ANY(%s) GROUP BY 1, 2",
            [list(document_ids)],
        )
        terms = Counter({(workspace_id, lexeme): n
                         for workspace_id, lexeme, n in cursor.fetchall()})
        cursor.execute(
            "SELECT workspace_id, count(*), coalesce(sum(term_count), 0) FROM retrieval_chunk "
            "WHERE document_id = ANY(%s) GROUP BY workspace_id",
            [list(document_ids)],
        )
        sizes: Sizes = Counter()
        for workspace_id, chunks, length in cursor.fetchall():
            sizes[workspace_id, "chunks"] = chunks
            sizes[workspace_id, "length"] = length
    return terms, sizes


def _statistics_adjust(terms: Frequencies, sizes: Sizes) -> None:
    changes = sorted((key, n) for key, n in terms.items() if n)
    workspaces = sorted({workspace_id for workspace_id, _ in sizes})
    # Search on a replica waits for this change to be replayed there (aistack.replicas).
    workspaces_writing(workspaces)
    after_commit(workspaces_written, workspaces)
    # One statement each, in key order: concurrent writers lock rows in the same order
    # and so cannot deadlock on the counters. Bound on the server: a load's changes are
    # tens of thousands of terms.
    with bound_cursor() as cursor:
        if changes:
            cursor.execute(
                "INSERT INTO retrieval_workspaceterm (workspace_id, lexeme, df) "
                "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::int[]) "
                "ORDER BY 1, 2 "
                "ON CONFLICT (workspace_id, lexeme) "
                "DO UPDATE SET df = retrieval_workspaceterm.df + EXCLUDED.df",
                [[w for (w, _), _ in changes], [lexeme for (_, lexeme), _ in changes],
                 [n for _, n in changes]],
            )
        if workspaces:
            cursor.execute(
                "INSERT INTO retrieval_workspacecorpus (workspace_id, chunks, length) "
                "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) "
                "ORDER BY 1 "
                "ON CONFLICT (workspace_id) DO UPDATE SET "
                "chunks = retrieval_workspacecorpus.chunks + EXCLUDED.chunks, "
                "length = retrieval_workspacecorpus.length + EXCLUDED.length",
                [workspaces, [sizes[w, "chunks"] for w in workspaces],
                 [sizes[w, "length"] for w in workspaces]],
            )


def _taken_back(found: tuple[Frequencies, Sizes]) -> tuple[Frequencies, Sizes]:
    terms, sizes = found
    return Counter({k: -n for k, n in terms.items()}), Counter({k: -n for k, n in sizes.items()})


def chunks_delete(*, document_ids: Sequence[int]) -> None:
    """Delete documents' chunks and take them out of their workspaces' statistics."""
    old = _frequencies(document_ids)
    Chunk.objects.filter(document_id__in=document_ids).delete()
    _statistics_adjust(*_taken_back(old))


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
    FROM unnest(%b::bigint[], %b::bigint[], %b::int[], %b::text[], %b::int[], %b::int[],
                %b::int[], %b::text[])
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
    old_terms, old_sizes = _taken_back(_frequencies(document_ids))
    Chunk.objects.filter(document_id__in=document_ids).delete()
    rows = [(item.document_id, item.workspace_id, spec)
            for item in items for spec in item.specs]
    with bound_cursor() as cursor:
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
    terms, sizes = _frequencies(document_ids)
    terms.update(old_terms)
    sizes.update(old_sizes)
    _vectors_copy(
        (chunk_ids[item.document_id, spec.ordinal], space.pk, item.workspace_id,
         input_hash(space.model, text), vector)
        for item in items
        for space, vectors in item.vectors.items()
        for spec, text, vector in zip(item.specs, item.inputs, vectors, strict=True)
    )
    # Last: each counter row stays locked until the transaction commits, so another job
    # of the same workspace waits no longer than it must.
    _statistics_adjust(terms, sizes)
    return len(chunk_ids)


def _vectors_copy(rows: Iterable[tuple[int, int, int, str, Sequence[float]]]) -> None:
    """Write new chunks' vectors (chunk, space, workspace, input hash, vector) by COPY:
    no statement to build or parse, a fraction of an INSERT's cost a row."""
    with bound_cursor() as cursor, cursor.copy(
            "COPY retrieval_chunkvector (chunk_id, space_id, workspace_id, input_hash, "
            "embedding) FROM STDIN") as copy:
        for chunk_id, space_id, workspace_id, hashed, vector in rows:
            copy.write_row((chunk_id, space_id, workspace_id, hashed, vector_text(vector)))


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
