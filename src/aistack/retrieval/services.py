"""Writes of chunks, their vectors and text-search statistics."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from aistack.ai.exceptions import AIError
from aistack.ai.types import Attribution
from aistack.documents.models import Document
from aistack.jobs.exceptions import TransientJobError
from aistack.retrieval.chunking import ChunkSpec
from aistack.retrieval.embedding import embed_texts, embedding_model_info
from aistack.retrieval.models import (
    Chunk,
    ChunkVector,
    EmbeddingSpace,
    IndexPart,
    SpaceStatus,
    StagedVector,
)
from aistack.retrieval.selectors import (
    SearchHit,
    SearchMode,
    active_space,
    active_space_changed,
    chunk_search,
)
from aistack.usage.services import cache_lookups_record

logger = logging.getLogger(__name__)

TEXT_SEARCH_CONFIG = "english"


# Chunks hold at most CHUNK_MAX_TOKENS (200); a title of this many characters adds
# roughly 40 more, which keeps the whole input inside MiniLM's 256-token window.
EMBEDDED_TITLE_MAX_CHARS = 160


def embedding_input(*, title: str, text: str) -> str:
    """Return what is embedded for a chunk: the document title gives every chunk its context."""
    return f"{title[:EMBEDDED_TITLE_MAX_CHARS]}\n\n{text}"


def _input_hash(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


def embedding_space_index_create(*, space: EmbeddingSpace) -> None:
    """Create the space's HNSW index (cosine) over its vectors cast to their width."""
    # The ids and widths are integers of ours, so formatting them in is safe; the
    # predicate must be a literal for the planner to match queries to this index.
    with connection.cursor() as cursor:
        # DDL on a table is refused while this transaction has deferred foreign-key
        # checks pending on it: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS chunkvector_hnsw_{int(space.pk)} "
            "ON retrieval_chunkvector USING hnsw "
            f"((embedding::vector({int(space.dimensions)})) vector_cosine_ops) "
            f"WHERE space_id = {int(space.pk)}"
        )


def embedding_space_for_configured_model() -> EmbeddingSpace:
    """Return the configured embedding model's space, creating it if need be.

    The first space is active at once. A later model's space is built alongside the
    active one (new documents get vectors in both) and serves search only once
    ``aistack reindex`` has filled it and switched over.
    """
    model, dimensions = embedding_model_info()
    with transaction.atomic():
        space, created = EmbeddingSpace.objects.select_for_update().get_or_create(
            model=model, defaults={"dimensions": dimensions}
        )
        if created or space.status == SpaceStatus.RETIRED:
            embedding_space_index_create(space=space)
            first = not EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).exists()
            space.status = SpaceStatus.ACTIVE if first else SpaceStatus.BUILDING
            space.activated_at = timezone.now() if first else None
            space.save(update_fields=["status", "activated_at"])
            active_space_changed()
    return space


def spaces_to_fill() -> list[EmbeddingSpace]:
    """Return the spaces new chunks need vectors in: the active one and any being built."""
    embedding_space_for_configured_model()
    return list(EmbeddingSpace.objects.exclude(status=SpaceStatus.RETIRED).order_by("pk"))


def spaces_unchanged(planned: Sequence[EmbeddingSpace]) -> None:
    """Raise unless the spaces to fill are still ``planned``; hold them until commit.

    Vectors are computed before the writing transaction; if ``aistack reindex``
    switched models meanwhile they would land in a retired space only.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM retrieval_embeddingspace WHERE status <> %s "
                       "ORDER BY id FOR SHARE", [SpaceStatus.RETIRED])
        current = [row[0] for row in cursor.fetchall()]
    if current != sorted(space.pk for space in planned):
        raise TransientJobError("the embedding model changed while indexing; indexing again")


@transaction.atomic
def embedding_space_activate(*, space: EmbeddingSpace) -> None:
    """Make search use ``space`` and drop the vectors of the one it replaces."""
    retired = list(EmbeddingSpace.objects.select_for_update()
                   .filter(status=SpaceStatus.ACTIVE).exclude(pk=space.pk))
    EmbeddingSpace.objects.filter(pk__in=[s.pk for s in retired]).update(
        status=SpaceStatus.RETIRED, activated_at=None)
    EmbeddingSpace.objects.filter(pk=space.pk).update(
        status=SpaceStatus.ACTIVE, activated_at=timezone.now())
    active_space_changed()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for old in retired:
            cursor.execute(f"DROP INDEX IF EXISTS chunkvector_hnsw_{int(old.pk)}")
    ChunkVector.objects.filter(space__in=retired).delete()


# Inputs per model call: large, because the model sorts a call's texts by length and
# pads each batch to its longest text (the job's lease is renewed meanwhile).
EMBED_GROUP = 1024


def vectors_for(
    *, space: EmbeddingSpace, inputs: Sequence[str], attribution: Attribution,
) -> list[list[float]]:
    """Return one vector per input, embedding only texts this space has not seen."""
    hashes = [_input_hash(space.model, text) for text in inputs]
    wanted = set(hashes)
    known = dict(
        ChunkVector.objects.filter(space=space, input_hash__in=wanted)
        .values_list("input_hash", "embedding")
        .distinct("input_hash")
        .order_by("input_hash")
    )
    if len(known) < len(wanted):
        # Vectors a large document's parts embedded before its chunks are stored.
        known.update(
            StagedVector.objects.filter(space=space, input_hash__in=wanted - known.keys())
            .values_list("input_hash", "embedding")
        )
    missing = sorted({h: text for h, text in zip(hashes, inputs, strict=True)
                      if h not in known}.items())
    cache_lookups_record(cache="embedding", feature=attribution.feature,
                         workspace_id=attribution.workspace_id,
                         hits=sum(h in known for h in hashes), misses=len(missing))
    for start in range(0, len(missing), EMBED_GROUP):
        group = missing[start:start + EMBED_GROUP]
        vectors = embed_texts(model=space.model, texts=[text for _, text in group],
                              attribution=attribution)
        known.update({h: vector for (h, _), vector in zip(group, vectors, strict=True)})
    return [list(known[h]) for h in hashes]


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

    document: Document
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
    document_ids = [item.document.pk for item in items]
    if not document_ids:
        return 0
    old = _frequencies(document_ids)
    Chunk.objects.filter(document_id__in=document_ids).delete()
    rows = [(item.document.pk, item.document.workspace_id, spec)
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
    _terms_adjust(delta)
    ChunkVector.objects.bulk_create(
        (
            ChunkVector(
                chunk_id=chunk_ids[item.document.pk, spec.ordinal],
                space=space,
                workspace_id=item.document.workspace_id,
                input_hash=_input_hash(space.model, text),
                embedding=vector,
            )
            for item in items
            for space, vectors in item.vectors.items()
            for spec, text, vector in zip(item.specs, item.inputs, vectors, strict=True)
        ),
        batch_size=1000,
    )
    return len(chunk_ids)


def vectors_stage(*, part: IndexPart, vectors: Mapping[EmbeddingSpace, Sequence[list[float]]]
                  ) -> None:
    """Keep the vectors an index part embedded until its document's chunks are stored."""
    StagedVector.objects.bulk_create(
        (StagedVector(part=part, space=space, input_hash=_input_hash(space.model, text),
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
                     input_hash=_input_hash(space.model, text), embedding=vector)
         for chunk, text, vector in zip(chunks, inputs, vectors, strict=True)),
        batch_size=1000, ignore_conflicts=True,
    )
    return len(chunks)


_QUERY_VECTOR_TTL_SECONDS = 24 * 3600


def _query_vector_key(model: str, query: str) -> str:
    return f"retrieval:query-vector:{_input_hash(model, query)}"


def query_vector(*, space: EmbeddingSpace, query: str, attribution: Attribution) -> list[float]:
    """Embed a search query, cached by model and text: repeated searches cost no model call."""
    key = _query_vector_key(space.model, query)
    vector = cache.get(key)
    cache_lookups_record(cache="query_vector", feature=attribution.feature,
                         workspace_id=attribution.workspace_id,
                         hits=int(vector is not None), misses=int(vector is None))
    if vector is None:
        [vector] = embed_texts(model=space.model, texts=[query], attribution=attribution)
        cache.set(key, vector, _QUERY_VECTOR_TTL_SECONDS)
    return list(vector)


def query_vectors_warm(*, queries: Sequence[str], attribution: Attribution) -> None:
    """Embed many queries in batched calls and cache their vectors for search."""
    space = active_space()
    if space is None or not queries:
        return
    vectors = embed_texts(model=space.model, texts=list(queries), attribution=attribution)
    cache.set_many({_query_vector_key(space.model, query): vector
                    for query, vector in zip(queries, vectors, strict=True)},
                   _QUERY_VECTOR_TTL_SECONDS)


def search(
    *, workspace_ids: list[int], query: str, k: int, mode: SearchMode,
    attribution: Attribution, exact: bool | None = None, snippets: bool = True,
) -> list[SearchHit]:
    """Return the best chunks for ``query`` in the workspaces (the caller checked access).

    Hybrid search whose query cannot be embedded (the model's provider, or the workers
    that run the local model, unreachable) answers with keyword search alone; vector
    search raises the model's error.
    """
    hits, _ = search_and_mode(workspace_ids=workspace_ids, query=query, k=k, mode=mode,
                              attribution=attribution, exact=exact, snippets=snippets)
    return hits


def search_and_mode(
    *, workspace_ids: list[int], query: str, k: int, mode: SearchMode,
    attribution: Attribution, exact: bool | None = None, snippets: bool = True,
) -> tuple[list[SearchHit], SearchMode]:
    """``search``, and the mode it used: text when a hybrid query could not be embedded."""
    space = active_space()
    vector = None
    if mode != SearchMode.TEXT and space is not None and query.strip():
        try:
            vector = query_vector(space=space, query=query, attribution=attribution)
        except AIError as exc:
            if mode == SearchMode.VECTOR:
                raise
            logger.warning("search: query not embedded (%s); keyword results only", exc)
            mode = SearchMode.TEXT
    hits = chunk_search(workspace_ids=workspace_ids, query=query, query_vector=vector, k=k,
                        mode=mode, space=space, exact=exact, snippets=snippets)
    return hits, mode
