"""Embeddings for retrieval, through the AI service layer (never a backend directly)."""

from __future__ import annotations

from collections.abc import Sequence

from aistack.ai import embedding_models
from aistack.ai.services import embeddings_create
from aistack.ai.types import Attribution


class EmbeddingModelChanged(Exception):
    """Vectors were asked of a model other than the configured one: run `aistack reindex`."""


def embedding_model_info() -> tuple[str, int]:
    """Return the configured embedding model's id and vector width."""
    model = embedding_models["default"]
    return model.id, model.dimensions


def embed_texts(*, model: str, texts: Sequence[str], attribution: Attribution) -> list[list[float]]:
    """Return one vector per text from ``model``, which must be the configured model."""
    result = embeddings_create(texts=texts, attribution=attribution)
    if result.model != model:
        raise EmbeddingModelChanged(
            f"vectors of {model} were asked for, but {result.model} is configured"
        )
    return result.vectors
