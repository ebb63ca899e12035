"""Embeddings for retrieval, through the AI service layer (never a backend directly).

A text is embedded once per model: vectors are found again by the hash of the model
and the text (chunks already stored, parts staged, queries cached).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from django.core.cache import cache

from aistack.ai import embedding_models
from aistack.ai.services import embeddings_create
from aistack.retrieval.models import ChunkVector, EmbeddingSpace, StagedVector
from aistack.retrieval.selectors import active_space
from aistack.usage.services import cache_lookups_record
from aistack.usage.types import Attribution

# Chunks hold at most CHUNK_MAX_TOKENS (200); a title of this many characters adds
# roughly 40 more, which keeps the whole input inside MiniLM's 256-token window.
EMBEDDED_TITLE_MAX_CHARS = 160


def embedding_input(*, title: str, text: str) -> str:
    """Return what is embedded for a chunk: the document title gives every chunk its context."""
    return f"{title[:EMBEDDED_TITLE_MAX_CHARS]}\n\n{text}"


def input_hash(model: str, text: str) -> str:
    """Return the key of ``text`` embedded by ``model``."""
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


def embedding_model_info() -> tuple[str, int]:
    """Return the configured embedding model's id and vector width."""
    model = embedding_models["default"]
    return model.id, model.dimensions


def embed_texts(*, model: str, texts: Sequence[str], attribution: Attribution) -> list[list[float]]:
    """Return one vector per text from ``model`` (a ``provider:model`` string)."""
    return embeddings_create(texts=texts, attribution=attribution, model_spec=model).vectors


# Inputs per model call: large, because the model sorts a call's texts by length and
# pads each batch to its longest text (the job's lease is renewed meanwhile).
EMBED_GROUP = 1024


def vectors_for(
    *, space: EmbeddingSpace, inputs: Sequence[str], attribution: Attribution,
) -> list[list[float]]:
    """Return one vector per input, embedding only texts this space has not seen."""
    hashes = [input_hash(space.model, text) for text in inputs]
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


_QUERY_VECTOR_TTL_SECONDS = 24 * 3600


def _query_vector_key(space: EmbeddingSpace, query: str) -> str:
    # By space, not only model: a model chosen again later may be another server's.
    return f"retrieval:query-vector:{space.pk}:{input_hash(space.model, query)}"


def query_vector(*, space: EmbeddingSpace, query: str, attribution: Attribution) -> list[float]:
    """Embed a search query, cached by model and text: repeated searches cost no model call."""
    key = _query_vector_key(space, query)
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
    cache.set_many({_query_vector_key(space, query): vector
                    for query, vector in zip(queries, vectors, strict=True)},
                   _QUERY_VECTOR_TTL_SECONDS)


def query_vectors_forget(*, queries: Sequence[str]) -> None:
    """Drop the cached vectors of queries: their next search embeds them again."""
    space = active_space()
    if space is not None and queries:
        cache.delete_many([_query_vector_key(space, query) for query in queries])
