"""Anthropic's Messages API through the ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import anthropic
from anthropic.types import MessageParam
from django.conf import settings

from aistack.ai.backends.http import http_client, reraise_if_blocked
from aistack.ai.base import BaseChatModel
from aistack.ai.exceptions import BadResponse, ConnectionFailed, Timeout, error_for_status
from aistack.ai.types import ChatRequest, ChatResult, StreamChunk
from aistack.usage.types import Usage

# The Messages API requires an output limit; this one fits answers and summaries.
DEFAULT_MAX_OUTPUT_TOKENS = 1024
# An error sent inside a 200 stream has no status of its own; its type tells what it was.
_STATUS_FOR_ERROR_TYPE = {
    "rate_limit_error": 429,
    "overloaded_error": 529,
    "api_error": 500,
    "timeout_error": 504,
    "invalid_request_error": 400,
}
_UNREADABLE = (AttributeError, IndexError, KeyError, TypeError, ValueError)


@contextmanager
def _vendor_errors(provider: str) -> Iterator[None]:
    try:
        yield
    except anthropic.APITimeoutError as exc:
        raise Timeout(provider=provider) from exc
    except anthropic.APIConnectionError as exc:
        reraise_if_blocked(exc)
        raise ConnectionFailed(provider=provider) from exc
    except anthropic.APIStatusError as exc:
        status = exc.status_code
        if status < 400:
            status = _STATUS_FOR_ERROR_TYPE.get(exc.type or "", 500)
        raise error_for_status(
            status, provider=provider, message=exc.api_message or exc.message,
            request_id=exc.request_id, headers=exc.response.headers,
        ) from exc
    except (anthropic.AnthropicError, *_UNREADABLE) as exc:
        raise BadResponse(provider=provider) from exc


def _usage(
    *, input_tokens: int | None, output_tokens: int | None,
    cache_read: int | None, cache_write: int | None,
) -> Usage:
    # Anthropic counts cache reads and writes apart from `input_tokens`; ours includes them.
    cached = cache_read or 0
    return Usage(
        input_tokens=(input_tokens or 0) + cached + (cache_write or 0),
        output_tokens=output_tokens or 0,
        cached_tokens=cached,
    )


class ChatModel(BaseChatModel):
    """A Claude model."""

    provider = "anthropic"
    supports_streaming = True
    max_input_tokens = 200_000

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        problems = super().check()
        if not self.options.get("API_KEY") and not self.options.get("BASE_URL"):
            problems.append("ANTHROPIC_API_KEY is not set")
        return problems

    @cached_property
    def client(self) -> anthropic.Anthropic:
        """Return the SDK client; the service layer retries, so the SDK must not."""
        return anthropic.Anthropic(
            api_key=self.options.get("API_KEY") or "unused",
            base_url=self.options.get("BASE_URL") or None,
            max_retries=0,
            timeout=settings.AI_TIMEOUT_SECONDS,
            http_client=http_client(timeout=settings.AI_TIMEOUT_SECONDS),
        )

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        # The Messages API takes the system prompt apart from the turns.
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[MessageParam] = []
        for m in request.messages:
            if m.role == "user":
                messages.append({"role": "user", "content": m.content})
            elif m.role == "assistant":
                messages.append({"role": "assistant", "content": m.content})
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
        }
        if system:
            arguments["system"] = system
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        return arguments

    def complete(self, request: ChatRequest, *, timeout: float) -> ChatResult:
        """Return the model's answer to ``request``."""
        with _vendor_errors(self.provider):
            message = self.client.messages.create(**self._arguments(request), timeout=timeout)
            usage = message.usage
            return ChatResult(
                text="".join(block.text for block in message.content if block.type == "text"),
                model=self.id,
                usage=_usage(
                    input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                    cache_read=usage.cache_read_input_tokens,
                    cache_write=usage.cache_creation_input_tokens,
                ),
                request_id=message._request_id,
            )

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        """Yield text deltas as they arrive; the last chunk carries usage."""
        with _vendor_errors(self.provider):
            stream = self.client.messages.create(
                **self._arguments(request), stream=True, timeout=timeout
            )
            request_id = stream.response.headers.get("request-id")
            input_tokens = cache_read = cache_write = None
            output_tokens = 0
            with stream:
                for event in stream:
                    if event.type == "message_start":
                        started = event.message.usage
                        input_tokens = started.input_tokens
                        cache_read = started.cache_read_input_tokens
                        cache_write = started.cache_creation_input_tokens
                        output_tokens = started.output_tokens
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield StreamChunk(text=event.delta.text, request_id=request_id)
                    elif event.type == "message_delta":
                        # Cumulative: the last message_delta has the final count.
                        output_tokens = event.usage.output_tokens
            yield StreamChunk(
                usage=_usage(input_tokens=input_tokens, output_tokens=output_tokens,
                             cache_read=cache_read, cache_write=cache_write),
                request_id=request_id,
            )
