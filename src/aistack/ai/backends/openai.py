"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) through the ``openai`` SDK."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, ClassVar

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

from aistack.ai.backends.http import http_client, reraise_if_blocked
from aistack.ai.base import BaseChatModel, BaseEmbeddingModel, BaseModel
from aistack.ai.exceptions import (
    BadResponse,
    ConnectionFailed,
    Timeout,
    error_for_status,
)
from aistack.ai.types import ChatRequest, ChatResult, EmbeddingResult, Message, StreamChunk
from aistack.usage.types import Usage

# Vectors have the model's width; a model not listed here cannot be used for embeddings,
# because the vector column is sized before the first text is embedded.
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
}
# Errors in reading a response the SDK accepted but that lacks what we need.
_UNREADABLE = (AttributeError, IndexError, KeyError, TypeError, ValueError)


@contextmanager
def _vendor_errors(provider: str) -> Iterator[None]:
    try:
        yield
    except openai.APITimeoutError as exc:
        raise Timeout(provider=provider) from exc
    except openai.APIConnectionError as exc:
        reraise_if_blocked(exc)
        raise ConnectionFailed(provider=provider) from exc
    except openai.APIStatusError as exc:
        raise error_for_status(
            exc.status_code, provider=provider, message=exc.message,
            request_id=exc.request_id, headers=exc.response.headers,
        ) from exc
    except (openai.OpenAIError, *_UNREADABLE) as exc:
        raise BadResponse(provider=provider) from exc


def _message_param(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cached_tokens=(details.cached_tokens or 0) if details else 0,
    )


class _OpenAIModel(BaseModel):
    provider = "openai"
    # Servers other than OpenAI's own accept any key, or none.
    needs_api_key: ClassVar[bool] = True

    @property
    def base_url(self) -> str | None:
        """Return the server's address, or None for OpenAI's own."""
        return self.options.get("BASE_URL") or None

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        problems = super().check()
        if self.needs_api_key and not self.base_url and not self.options.get("API_KEY"):
            problems.append("OPENAI_API_KEY is not set")
        return problems

    @cached_property
    def client(self) -> openai.OpenAI:
        """Return the SDK client; the service layer retries, so the SDK must not."""
        return openai.OpenAI(
            api_key=self.options.get("API_KEY") or "unused",
            base_url=self.base_url,
            max_retries=0,
            timeout=settings.AI_TIMEOUT_SECONDS,
            http_client=http_client(timeout=settings.AI_TIMEOUT_SECONDS),
        )


class ChatModel(_OpenAIModel, BaseChatModel):
    """A chat model served by the OpenAI chat completions API."""

    supports_streaming = True
    # OpenAI's newer models refuse `max_tokens`; most compatible servers only know it.
    limit_parameter: ClassVar[str] = "max_completion_tokens"

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": [_message_param(m) for m in request.messages],
        }
        if request.max_output_tokens is not None:
            arguments[self.limit_parameter] = request.max_output_tokens
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        return arguments

    def complete(self, request: ChatRequest, *, timeout: float) -> ChatResult:
        """Return the model's answer to ``request``."""
        with _vendor_errors(self.provider):
            response = self.client.chat.completions.create(
                **self._arguments(request), timeout=timeout
            )
            return ChatResult(
                text=response.choices[0].message.content or "",
                model=self.id,
                usage=_usage(response.usage),
                request_id=response._request_id,
            )

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        """Yield the answer as the server sends it; the last chunk carries usage."""
        with _vendor_errors(self.provider):
            stream = self.client.chat.completions.create(
                **self._arguments(request),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout,
            )
            request_id = stream.response.headers.get("x-request-id")
            with stream:
                for chunk in stream:
                    text = (chunk.choices[0].delta.content or "") if chunk.choices else ""
                    usage = _usage(chunk.usage) if chunk.usage else None
                    if text or usage:
                        yield StreamChunk(text=text, usage=usage, request_id=request_id)


class EmbeddingModel(_OpenAIModel, BaseEmbeddingModel):
    """An embedding model served by the OpenAI embeddings API."""

    max_batch_size = 256

    @property
    def dimensions(self) -> int:
        """Return the width of this model's vectors (measured by the Models page, or known)."""
        return int(self.options.get("DIMENSIONS") or EMBEDDING_DIMENSIONS[self.model])

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        problems = super().check()
        if self.model and self.model not in EMBEDDING_DIMENSIONS \
                and not self.options.get("DIMENSIONS"):
            problems.append(
                f"the width of {self.model!r} vectors is unknown; "
                f"use one of {', '.join(sorted(EMBEDDING_DIMENSIONS))}"
            )
        return problems

    def embed(self, texts: Sequence[str], *, timeout: float) -> EmbeddingResult:
        """Return one vector per text."""
        with _vendor_errors(self.provider):
            response = self.client.embeddings.create(
                model=self.model, input=list(texts), encoding_format="float", timeout=timeout
            )
            data = sorted(response.data, key=lambda item: item.index)
            if len(data) != len(texts):
                raise ValueError(f"{len(data)} vectors for {len(texts)} texts")
            return EmbeddingResult(
                vectors=[item.embedding for item in data],
                model=self.id,
                usage=Usage(input_tokens=response.usage.prompt_tokens),
                request_id=response._request_id,
            )
