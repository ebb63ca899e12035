"""A provider that follows a script: for tests and benchmarks, never for users.

Behaviour comes from the model name, so that every process (a Celery worker too)
behaves the same from configuration alone: ``scripted:echo`` answers with the last
user message, ``scripted:unavailable``, ``scripted:rate-limited`` and
``scripted:timeout`` always fail that way, and ``scripted:hash`` embeds texts as
hashed bags of words (texts sharing words are close). ``LATENCY_SECONDS`` (from
``AI_SCRIPTED_LATENCY_SECONDS``) delays every answer.

Within one process, :func:`script` queues replies and failures that are served
before the rule, and :func:`calls` lists every call the backend received.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aistack.ai.base import BaseChatModel, BaseEmbeddingModel
from aistack.ai.exceptions import AIError, RateLimited, Timeout, Unavailable
from aistack.ai.types import ChatRequest, ChatResult, EmbeddingResult, StreamChunk
from aistack.usage.types import Usage

CHAT_RULES = ("echo", "unavailable", "rate-limited", "timeout")
EMBEDDING_RULES = ("hash",)
HASH_DIMENSIONS = 384
RULE_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A queued answer."""

    text: str
    usage: Usage | None = None
    # Seconds before the first token (past the call's timeout, the call times out).
    delay: float = 0.0
    # Seconds between streamed words.
    chunk_delay: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Call:
    """A call the scripted backend received."""

    model: str
    operation: str
    messages: tuple[str, ...]
    outcome: str


_lock = threading.Lock()
_queues: dict[str, deque[Reply | AIError]] = {}
_calls: list[Call] = []


def script(model: str, *steps: Reply | AIError) -> None:
    """Queue replies and failures that ``scripted:<model>`` serves, in order, before its rule."""
    with _lock:
        _queues.setdefault(model, deque()).extend(steps)


def calls() -> list[Call]:
    """Return every call received in this process since the last reset."""
    with _lock:
        return list(_calls)


def reset() -> None:
    """Forget queued steps and recorded calls."""
    with _lock:
        _queues.clear()
        _calls.clear()


def _record(model: str, operation: str, messages: Sequence[str], outcome: str) -> None:
    with _lock:
        _calls.append(Call(model=model, operation=operation, messages=tuple(messages),
                           outcome=outcome))


def _words(texts: Sequence[str]) -> int:
    return sum(len(text.split()) for text in texts)


class _ScriptedModel:
    provider = "scripted"
    model: str
    options: dict[str, Any]

    @property
    def circuit_key(self) -> str:
        """Return this model's own breaker: each scripted model stands in for a provider."""
        return f"scripted:{self.model}"

    def _next_step(self, operation: str, messages: Sequence[str], timeout: float) -> Reply | None:
        with _lock:
            queue = _queues.get(self.model)
            step = queue.popleft() if queue else None
        latency = float(self.options.get("LATENCY_SECONDS") or 0.0)
        if isinstance(step, Reply):
            latency += step.delay
        try:
            if latency > timeout:
                time.sleep(timeout)
                raise Timeout(provider=self.provider)
            if latency:
                time.sleep(latency)
            if isinstance(step, AIError):
                raise step
            if step is None:
                self._apply_rule()
        except AIError as exc:
            _record(self.model, operation, messages, type(exc).__name__)
            raise
        _record(self.model, operation, messages, "ok")
        return step

    def _apply_rule(self) -> None:
        if self.model == "unavailable":
            raise Unavailable(provider=self.provider, status_code=503)
        if self.model == "rate-limited":
            raise RateLimited(provider=self.provider, retry_after=RULE_RETRY_AFTER_SECONDS)
        if self.model == "timeout":
            raise Timeout(provider=self.provider)


class ChatModel(_ScriptedModel, BaseChatModel):
    """A chat model that answers from its script."""

    supports_streaming = True

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        if self.model not in CHAT_RULES:
            return [f"scripted chat models are {', '.join(CHAT_RULES)}"]
        return []

    def _reply(self, request: ChatRequest, operation: str, timeout: float) -> Reply:
        texts = [m.content for m in request.messages]
        step = self._next_step(operation, texts, timeout)
        return step or Reply(text=request.last_user_text())

    def _usage(self, request: ChatRequest, reply: Reply) -> Usage:
        return reply.usage or Usage(
            input_tokens=_words([m.content for m in request.messages]),
            output_tokens=_words([reply.text]),
        )

    def complete(self, request: ChatRequest, *, timeout: float) -> ChatResult:
        """Return the next scripted answer."""
        reply = self._reply(request, "complete", timeout)
        return ChatResult(text=reply.text, model=self.id, usage=self._usage(request, reply),
                          request_id=f"scripted-{len(_calls)}")

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        """Yield the next scripted answer word by word."""
        reply = self._reply(request, "stream", timeout)
        request_id = f"scripted-{len(_calls)}"
        words = reply.text.split(" ")
        for index, word in enumerate(words):
            if index and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            yield StreamChunk(text=word if index == 0 else " " + word, request_id=request_id)
        yield StreamChunk(usage=self._usage(request, reply), request_id=request_id)


class EmbeddingModel(_ScriptedModel, BaseEmbeddingModel):
    """Hashed bag-of-words vectors: cheap, deterministic, and close for shared words."""

    max_batch_size = 64

    @property
    def dimensions(self) -> int:
        """Return the width of this model's vectors."""
        return HASH_DIMENSIONS

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        if self.model not in EMBEDDING_RULES:
            return [f"scripted embedding models are {', '.join(EMBEDDING_RULES)}"]
        return []

    def embed(self, texts: Sequence[str], *, timeout: float) -> EmbeddingResult:
        """Return one unit-length vector per text."""
        self._next_step("embed", texts, timeout)
        return EmbeddingResult(
            vectors=[_hashed(text) for text in texts],
            model=self.id,
            usage=Usage(input_tokens=_words(texts)),
        )


def _hashed(text: str) -> list[float]:
    vector = [0.0] * HASH_DIMENSIONS
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "big") % HASH_DIMENSIONS] += 1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]
