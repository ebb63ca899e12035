"""Chunking a batch of documents at once gives each the chunks it would get alone."""

from __future__ import annotations

from django.conf import settings

from aistack.retrieval.chunking import _splitter, chunk_texts

SENTENCE = "Rollbacks need a second reviewer, and the deploy log records who approved each one. "


def test_a_batch_is_chunked_as_each_text_would_be_alone() -> None:
    texts = [
        SENTENCE * 40,
        "",
        "A short note.",
        "\n\n".join(SENTENCE * (n + 1) for n in range(8)),
        "Ünïcode — offsets count characters, not bytes. " * 30,
    ]

    batch = chunk_texts(texts)

    assert len(batch) == len(texts)
    alone = _splitter(settings.CHUNK_MAX_TOKENS, settings.CHUNK_OVERLAP_TOKENS)
    assert [[(spec.start_char, spec.text) for spec in specs] for specs in batch] == [
        alone.chunk_indices(text) for text in texts]
    assert batch[1] == [] and len(batch[2]) == 1 and len(batch[0]) > 2
    for text, specs in zip(texts, batch, strict=True):
        assert [spec.ordinal for spec in specs] == list(range(len(specs)))
        for spec in specs:
            assert text[spec.start_char:spec.end_char] == spec.text
            assert 0 < spec.token_count <= settings.CHUNK_MAX_TOKENS
