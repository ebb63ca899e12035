"""One contract, every backend: what the service layer may rely on, whoever serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from aistack.ai import PROVIDERS
from aistack.ai.backends import anthropic, local, ollama, openai, scripted
from aistack.ai.base import BaseChatModel, BaseEmbeddingModel
from aistack.ai.exceptions import InvalidRequest
from aistack.ai.types import ChatRequest, ChatResult, Message
from tests.ai import vendors
from tests.ai.conftest import TEST_API_KEY
from tests.ai.vendors import VendorServer

ANSWER = "The sky is blue on a clear day."
REQUEST = ChatRequest(
    messages=(Message(role="system", content="Answer from the text."),
              Message(role="user", content="What colour is the sky?")),
    context=(f"Cats sleep most of the afternoon. {ANSWER}",),
)


@dataclass
class ChatSubject:
    model: BaseChatModel
    # Make the backend's next answer be ANSWER, as a stream or not.
    arrange: Callable[[bool], None]


def _vendor_pieces() -> list[str]:
    return ["The sky ", "is blue ", "on a clear day."]


@pytest.fixture(params=["openai", "anthropic", "ollama", "local", "scripted"])
def chat_subject(request: pytest.FixtureRequest, vendor: VendorServer) -> Iterator[ChatSubject]:
    name = request.param
    if name in {"openai", "ollama"}:
        cls = openai.ChatModel if name == "openai" else ollama.ChatModel
        model = cls(alias="default", model="gpt-4.1-mini" if name == "openai" else "llama3.2",
                    options={"API_KEY": TEST_API_KEY, "BASE_URL": f"{vendor.url}/v1"})
        yield ChatSubject(model, lambda stream: vendor.push(
            vendors.openai_stream(_vendor_pieces()) if stream else vendors.openai_chat(ANSWER)))
    elif name == "anthropic":
        model = anthropic.ChatModel(alias="default", model="claude-haiku-4-5",
                                    options={"API_KEY": TEST_API_KEY, "BASE_URL": vendor.url})
        yield ChatSubject(model, lambda stream: vendor.push(
            vendors.anthropic_stream(_vendor_pieces()) if stream
            else vendors.anthropic_message(ANSWER)))
    elif name == "local":
        yield ChatSubject(local.ChatModel(alias="default", model="extractive", options={}),
                          lambda stream: None)
    else:
        yield ChatSubject(
            scripted.ChatModel(alias="default", model="echo", options={}),
            lambda stream: scripted.script("echo", scripted.Reply(text=ANSWER)),
        )


def test_configuration_passes_its_own_check(chat_subject: ChatSubject) -> None:
    assert chat_subject.model.check() == []
    assert chat_subject.model.provider in PROVIDERS
    assert chat_subject.model.id == f"{chat_subject.model.provider}:{chat_subject.model.model}"


def test_complete_returns_the_answer_with_usage(chat_subject: ChatSubject) -> None:
    chat_subject.arrange(False)

    result = chat_subject.model.complete(REQUEST, timeout=5)

    assert isinstance(result, ChatResult)
    assert ANSWER in result.text
    assert result.model == chat_subject.model.id
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    assert result.extractive == chat_subject.model.extractive


def test_stream_yields_the_same_answer_then_usage(chat_subject: ChatSubject) -> None:
    chat_subject.arrange(True)

    chunks = list(chat_subject.model.stream(REQUEST, timeout=5))

    assert ANSWER in "".join(chunk.text for chunk in chunks)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens > 0
    if not chat_subject.model.supports_streaming:
        assert len([chunk for chunk in chunks if chunk.text]) == 1


def test_requests_it_cannot_take_are_refused_before_any_work(chat_subject: ChatSubject) -> None:
    model = chat_subject.model
    too_long = "word " * (model.max_input_tokens * 2)

    with pytest.raises(InvalidRequest):
        model.validate(ChatRequest(messages=()))
    with pytest.raises(InvalidRequest):
        model.validate(ChatRequest(messages=(Message(role="user", content=too_long),)))
    model.validate(REQUEST)


@dataclass
class EmbeddingSubject:
    model: BaseEmbeddingModel
    arrange: Callable[[int], None]


@pytest.fixture(params=["openai", "ollama", "local", "scripted"])
def embedding_subject(
    request: pytest.FixtureRequest, vendor: VendorServer
) -> Iterator[EmbeddingSubject]:
    name = request.param
    if name in {"openai", "ollama"}:
        cls = openai.EmbeddingModel if name == "openai" else ollama.EmbeddingModel
        model = cls(alias="default",
                    model="text-embedding-3-small" if name == "openai" else "all-minilm",
                    options={"API_KEY": TEST_API_KEY, "BASE_URL": f"{vendor.url}/v1"})
        yield EmbeddingSubject(model, lambda n: vendor.push(vendors.openai_embeddings(
            [[0.5] * model.dimensions for _ in range(n)])))
    elif name == "local":
        yield EmbeddingSubject(
            local.EmbeddingModel(alias="default", model="all-MiniLM-L6-v2-int8", options={}),
            lambda n: None,
        )
    else:
        yield EmbeddingSubject(scripted.EmbeddingModel(alias="default", model="hash", options={}),
                               lambda n: None)


def test_embed_returns_one_vector_per_text(embedding_subject: EmbeddingSubject) -> None:
    texts = ["first text", "second text", "third text"]
    embedding_subject.arrange(len(texts))

    result = embedding_subject.model.embed(texts, timeout=5)

    assert len(result.vectors) == len(texts)
    assert {len(vector) for vector in result.vectors} == {embedding_subject.model.dimensions}
    assert result.usage.input_tokens > 0
    assert result.model == embedding_subject.model.id
    assert embedding_subject.model.check() == []


def test_embed_batches_are_bounded(embedding_subject: EmbeddingSubject) -> None:
    model = embedding_subject.model
    with pytest.raises(InvalidRequest):
        model.validate(["text"] * (model.max_batch_size + 1))
    model.validate(["text"] * model.max_batch_size)
