"""Embeddings for retrieval, through the AI service layer (never a backend directly)."""

from __future__ import annotations

from collections.abc import Sequence

from aistack.ai import embedding_models
from aistack.ai.services import embeddings_create
from aistack.ai.types import Attribution


def embedding_model_info() -> tuple[str, int]:
    """Return the configured embedding model's id and vector width."""
    model = embedding_models["default"]
    return model.id, model.dimensions


def embed_texts(*, model: str, texts: Sequence[str], attribution: Attribution) -> list[list[float]]:
    """Return one vector per text from ``model`` (a ``provider:model`` string)."""
    return embeddings_create(texts=texts, attribution=attribution, model_spec=model).vectors
