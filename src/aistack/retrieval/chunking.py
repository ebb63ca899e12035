"""Split text into token-bounded, overlapping chunks along paragraph and sentence lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from semantic_text_splitter import TextSplitter

from aistack.ai.backends.local import tokenizer
from aistack.cache import content_hash


@dataclass(frozen=True, kw_only=True)
class ChunkSpec:
    """A chunk before it is stored."""

    ordinal: int
    text: str
    token_count: int
    start_char: int
    end_char: int
    content_hash: str


@cache
def _splitter(max_tokens: int, overlap: int) -> TextSplitter:
    # Counting with the embedding model's own tokenizer keeps every chunk within
    # what the model reads, instead of guessing from characters.
    return TextSplitter.from_huggingface_tokenizer(
        tokenizer(), capacity=max_tokens, overlap=overlap, trim=True
    )


def chunk_texts(texts: Sequence[str]) -> list[list[ChunkSpec]]:
    """Split each text into chunks with character offsets into it.

    The texts are split in parallel and their chunks counted in one tokenizer call:
    a batch of documents costs far less than splitting them one by one.
    """
    splitter = _splitter(settings.CHUNK_MAX_TOKENS, settings.CHUNK_OVERLAP_TOKENS)
    split = splitter.chunk_all_indices(list(texts))
    encodings = iter(tokenizer().encode_batch(
        [piece for pieces in split for _, piece in pieces], add_special_tokens=False))
    return [
        [
            ChunkSpec(
                ordinal=ordinal,
                text=piece,
                token_count=len(next(encodings).ids),
                start_char=start,
                end_char=start + len(piece),
                content_hash=content_hash(piece),
            )
            for ordinal, (start, piece) in enumerate(pieces)
        ]
        for pieces in split
    ]


def chunk_text(text: str) -> list[ChunkSpec]:
    """Split ``text`` into chunks with character offsets into it."""
    return chunk_texts([text])[0]
