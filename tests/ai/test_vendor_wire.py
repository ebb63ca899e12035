"""Vendor backends driven through the official SDKs against servers speaking their protocols."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aistack.ai.backends import anthropic, ollama, openai
from aistack.ai.base import BaseChatModel
from aistack.ai.exceptions import (
    AIError,
    BadResponse,
    ConnectionFailed,
    Misconfigured,
    Overloaded,
    RateLimited,
    Rejected,
    Timeout,
    Unavailable,
)
from aistack.ai.types import ChatRequest, Message, StreamChunk
from tests.ai import vendors
from tests.ai.conftest import TEST_API_KEY
from tests.ai.vendors import Canned, VendorServer

REQUEST = ChatRequest(
    messages=(Message(role="system", content="Be brief."),
              Message(role="user", content="Hello?")),
    max_output_tokens=50,
)


def _openai(url: str) -> BaseChatModel:
    return openai.ChatModel(alias="default", model="gpt-4.1-mini",
                            options={"API_KEY": TEST_API_KEY, "BASE_URL": f"{url}/v1"})


def _ollama(url: str) -> BaseChatModel:
    return ollama.ChatModel(alias="default", model="llama3.2", options={"BASE_URL": f"{url}/v1"})


def _anthropic(url: str) -> BaseChatModel:
    return anthropic.ChatModel(alias="default", model="claude-haiku-4-5",
                               options={"API_KEY": TEST_API_KEY, "BASE_URL": url})


# name: (build the backend, its error response, its SDK's root exception module)
VENDORS: dict[str, tuple[Callable[[str], BaseChatModel], Callable[..., Canned], str]] = {
    "openai": (_openai, vendors.openai_error, "openai"),
    "ollama": (_ollama, vendors.openai_error, "openai"),
    "anthropic": (_anthropic, vendors.anthropic_error, "anthropic"),
}


def _drain(chunks: Iterator[StreamChunk], into: list[str]) -> None:
    for chunk in chunks:
        into.append(chunk.text)


def _raised(model: BaseChatModel, timeout: float = 5) -> AIError:
    with pytest.raises(AIError) as caught:
        model.complete(REQUEST, timeout=timeout)
    return caught.value


@pytest.mark.parametrize("name", VENDORS)
@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after": "2"}, RateLimited),
        (500, {}, Unavailable),
        (503, {}, Unavailable),
        (529, {}, Overloaded),
        (400, {}, Rejected),
        (401, {}, Misconfigured),
        (404, {}, Misconfigured),
    ],
)
def test_error_statuses_map_to_our_errors_without_sdk_retries(
    vendor: VendorServer, name: str, status: int, headers: dict[str, str],
    expected: type[AIError],
) -> None:
    build, error_response, sdk = VENDORS[name]
    vendor.push(error_response(status, headers=headers, request_id="req_failed"))

    error = _raised(build(vendor.url))

    assert type(error) is expected
    assert error.provider == build(vendor.url).provider
    assert error.status_code == status
    assert error.request_id == "req_failed"
    assert type(error.__cause__).__module__.startswith(sdk)
    # The SDK's own retries are off: the service layer is the only one that retries.
    assert len(vendor.received) == 1


@pytest.mark.parametrize("name", VENDORS)
def test_retry_after_is_read_in_seconds_and_milliseconds(vendor: VendorServer, name: str) -> None:
    build, error_response, _ = VENDORS[name]
    vendor.push(error_response(429, headers={"retry-after": "3"}),
                error_response(429, headers={"retry-after-ms": "1500"}),
                error_response(429))
    model = build(vendor.url)

    delays = [getattr(_raised(model), "retry_after", "missing") for _ in range(3)]

    assert delays == [3.0, 1.5, None]


@pytest.mark.parametrize("name", VENDORS)
def test_a_slow_response_times_out(vendor: VendorServer, name: str) -> None:
    build, _, _ = VENDORS[name]
    answer = vendors.anthropic_message("late") if name == "anthropic" else vendors.openai_chat("x")
    answer.delay = 2.0
    vendor.push(answer)

    error = _raised(build(vendor.url), timeout=0.3)

    assert isinstance(error, Timeout)


@pytest.mark.parametrize("name", VENDORS)
@pytest.mark.parametrize("body", [b"{not json", b'{"unexpected": true}', b"<html>proxy</html>"])
def test_malformed_bodies_are_bad_responses(vendor: VendorServer, name: str, body: bytes) -> None:
    build, _, _ = VENDORS[name]
    vendor.push(Canned(headers={"content-type": "application/json"}, body=body))

    assert isinstance(_raised(build(vendor.url)), BadResponse)


@pytest.mark.parametrize("name", VENDORS)
def test_a_refused_connection_is_a_connection_failure(name: str) -> None:
    build, _, _ = VENDORS[name]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    assert isinstance(_raised(build(f"http://127.0.0.1:{closed_port}")), ConnectionFailed)


def test_openai_request_and_usage_on_the_wire(vendor: VendorServer) -> None:
    vendor.push(vendors.openai_chat("Hi.", input_tokens=30, output_tokens=2, cached_tokens=4),
                vendors.openai_stream(["Hi", "."], input_tokens=30, output_tokens=2))
    model = _openai(vendor.url)

    result = model.complete(REQUEST, timeout=5)
    chunks = list(model.stream(REQUEST, timeout=5))

    assert (result.text, result.request_id) == ("Hi.", "req_openai_1")
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_tokens) \
        == (30, 2, 4)
    plain, streamed = vendor.received
    assert plain.path == "/v1/chat/completions"
    assert plain.headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert plain.body["model"] == "gpt-4.1-mini"
    assert plain.body["messages"] == [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Hello?"}]
    assert plain.body["max_completion_tokens"] == 50
    assert streamed.body["stream"] is True
    assert streamed.body["stream_options"] == {"include_usage": True}
    assert [c.text for c in chunks] == ["Hi", ".", ""]
    assert chunks[-1].usage is not None and chunks[-1].usage.input_tokens == 30
    assert chunks[0].request_id == "req_openai_stream"


def test_ollama_sends_the_limit_compatible_servers_know(vendor: VendorServer) -> None:
    vendor.push(vendors.openai_chat("Hi."))

    _ollama(vendor.url).complete(REQUEST, timeout=5)

    assert vendor.received[0].body["max_tokens"] == 50
    assert "max_completion_tokens" not in vendor.received[0].body


def test_anthropic_request_and_usage_on_the_wire(vendor: VendorServer) -> None:
    vendor.push(vendors.anthropic_message("Hi.", input_tokens=20, output_tokens=3, cache_read=5),
                vendors.anthropic_stream(["Hi", "."], input_tokens=20, output_tokens=3))
    model = _anthropic(vendor.url)

    result = model.complete(REQUEST, timeout=5)
    chunks = list(model.stream(REQUEST, timeout=5))

    # Cache reads are billed apart by Anthropic; our input count includes them.
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_tokens) \
        == (25, 3, 5)
    assert result.request_id == "req_anthropic_1"
    plain, streamed = vendor.received
    assert plain.path == "/v1/messages"
    assert plain.body["system"] == "Be brief."
    assert plain.body["messages"] == [{"role": "user", "content": "Hello?"}]
    assert plain.body["max_tokens"] == 50
    assert streamed.body["stream"] is True
    assert "".join(c.text for c in chunks) == "Hi."
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.input_tokens, chunks[-1].usage.output_tokens) == (20, 3)


def test_a_stream_cut_short_is_a_connection_failure(vendor: VendorServer) -> None:
    vendor.push(vendors.openai_stream(["one ", "two ", "three"], drop_after=2))
    received: list[str] = []

    with pytest.raises(ConnectionFailed):
        _drain(_openai(vendor.url).stream(REQUEST, timeout=5), received)

    assert received == ["one ", "two "]


def test_anthropic_overload_inside_a_stream_is_overloaded(vendor: VendorServer) -> None:
    vendor.push(vendors.anthropic_stream(["one ", "two ", "three"], error_after=1))
    received: list[str] = []

    with pytest.raises(Overloaded) as caught:
        _drain(_anthropic(vendor.url).stream(REQUEST, timeout=5), received)

    assert received == ["one "]
    assert caught.value.status_code == 529


def test_openai_embeddings_keep_input_order(vendor: VendorServer) -> None:
    model = openai.EmbeddingModel(alias="default", model="text-embedding-3-small",
                                  options={"API_KEY": TEST_API_KEY, "BASE_URL": f"{vendor.url}/v1"})
    response = vendors.openai_embeddings([[1.0] * 1536, [2.0] * 1536], input_tokens=7)
    body: dict[str, Any] = json.loads(response.body)
    body["data"].reverse()  # servers may answer out of order; `index` says where each goes
    response.body = json.dumps(body).encode()
    vendor.push(response, vendors.openai_embeddings([[1.0] * 1536]))

    result = model.embed(["a", "b"], timeout=5)

    assert [vector[0] for vector in result.vectors] == [1.0, 2.0]
    assert result.usage.input_tokens == 7
    assert vendor.received[0].body["input"] == ["a", "b"]
    with pytest.raises(BadResponse):
        model.embed(["a", "b"], timeout=5)  # one vector for two texts
