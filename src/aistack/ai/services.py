"""The one choke point for every model call.

Each call here is checked against the monthly budgets (its estimated cost reserved
before, its real cost settled after), timed, retried by error class with exponential
backoff and jitter (honouring ``Retry-After``), sent to the fallback chat models when
the default one cannot serve, skipped past providers whose circuit is open, logged
as one JSON line and one metric sample per attempt, and written to the usage ledger
as one row. Backends and vendor SDKs never retry on their own, so a request is never
retried twice over.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from django.conf import settings

from aistack.ai import chat_models, embedding_model_for, embedding_models
from aistack.ai.base import BaseChatModel, BaseEmbeddingModel, BaseModel
from aistack.ai.circuit import Circuit
from aistack.ai.exceptions import (
    AIError,
    BudgetExceeded,
    CircuitOpen,
    InvalidRequest,
    RateLimited,
    Rejected,
)
from aistack.ai.types import ChatRequest, ChatResult, EmbeddingResult, StreamChunk
from aistack.observability.metrics import ai_budget_denials, ai_request_seconds, ai_usage_observe
from aistack.transactions import connection_give_back
from aistack.usage.budgets import (
    OverBudget,
    Reservation,
    budget_reserve,
    budget_settle,
    call_estimate_usd,
)
from aistack.usage.models import Outcome
from aistack.usage.pricing import cost_usd
from aistack.usage.services import usage_record
from aistack.usage.types import Attribution, Usage

logger = structlog.stdlib.get_logger("aistack.ai")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
# What a model call answers, with its usage and request id.
R = TypeVar("R", ChatResult, EmbeddingResult)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When to send a failed request to the same model again."""

    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    retry_after_max_seconds: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        """Return the policy the settings describe."""
        return cls(
            max_attempts=settings.AI_MAX_ATTEMPTS,
            backoff_seconds=settings.AI_RETRY_BACKOFF_SECONDS,
            backoff_max_seconds=settings.AI_RETRY_BACKOFF_MAX_SECONDS,
            retry_after_max_seconds=settings.AI_RETRY_AFTER_MAX_SECONDS,
        )

    def delay(self, *, error: AIError, attempt: int) -> float | None:
        """Return seconds to wait before attempt ``attempt + 1``, or None to stop trying."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        # Jitter keeps apart the retries of calls that failed together (an outage).
        jitter = random.uniform(0.5, 1.0)  # noqa: S311
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > self.retry_after_max_seconds:
                return None
            # Never sooner than asked; the jitter only ever adds to the wait.
            return error.retry_after + self.backoff_seconds * jitter
        return min(self.backoff_max_seconds, self.backoff_seconds * 2.0 ** (attempt - 1)) * jitter


def _may_fall_back(error: AIError) -> bool:
    # A request that is wrong for one model is wrong for all; anything else is the
    # provider's trouble, which another provider may not share.
    return not isinstance(error, InvalidRequest | Rejected)


class _Call:
    """One service call: its attempts, their log lines, and at the end its ledger row."""

    def __init__(self, *, operation: str, attribution: Attribution, prompt: Sequence[str]) -> None:
        self.operation = operation
        self.attribution = attribution
        self.prompt = prompt
        self.started = time.monotonic()
        self.attempts = 0
        self.model: BaseModel | None = None
        self.first_token_ms: int | None = None
        self.reservation: Reservation | None = None

    def elapsed_ms(self, since: float | None = None) -> int:
        return round((time.monotonic() - (self.started if since is None else since)) * 1000)

    def log(
        self,
        model: BaseModel,
        *,
        outcome: str,
        started: float,
        usage: Usage | None = None,
        error: BaseException | None = None,
        request_id: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        line: dict[str, Any] = {
            "feature": self.attribution.feature,
            "operation": self.operation,
            "alias": model.alias,
            "model": model.id,
            "attempt": self.attempts,
            "outcome": outcome,
            "latency_ms": self.elapsed_ms(started),
            "user_id": self.attribution.user_id,
            "workspace_id": self.attribution.workspace_id,
        }
        if self.attribution.workspace_ids:
            line["workspace_ids"] = list(self.attribution.workspace_ids)
        if usage is not None:
            line.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                        cached_tokens=usage.cached_tokens)
        if self.first_token_ms is not None:
            line["time_to_first_token_ms"] = self.first_token_ms
        if error is not None:
            line["error_class"] = type(error).__name__
            if isinstance(error, AIError):
                line["status_code"] = error.status_code
                request_id = request_id or error.request_id
        if request_id:
            # The provider's id; ``request_id`` is ours, from the log context.
            line["provider_request_id"] = request_id
        if retry_in is not None:
            line["retry_in_ms"] = round(retry_in * 1000)
        # Prompts hold users' documents: they are logged only when debugging asks for it.
        if logger.isEnabledFor(logging.DEBUG):
            line["prompt"] = list(self.prompt)
        logger.log(logging.WARNING if outcome == "error" else logging.INFO, "ai.attempt", **line)
        ai_request_seconds.labels(provider=model.provider, model=model.id,
                                  operation=self.operation, outcome=outcome,
                                  ).observe(line["latency_ms"] / 1000)

    def reserve(self, models: Sequence[BaseModel], *, input_chars: int,
                output_tokens: int) -> None:
        """Hold the call's estimated cost against its budgets; raise BudgetExceeded if over."""
        estimate = call_estimate_usd(served_by=[(model.provider, model.model) for model in models],
                                     input_chars=input_chars, output_tokens=output_tokens)
        try:
            self.reservation = budget_reserve(attribution=self.attribution, estimate=estimate)
        except OverBudget as exc:
            ai_budget_denials.labels(feature=self.attribution.feature, scope=exc.scope).inc()
            logger.warning("ai.budget_exceeded", feature=self.attribution.feature,
                           operation=self.operation, scope=exc.scope,
                           user_id=self.attribution.user_id,
                           workspace_id=self.attribution.workspace_id,
                           workspace_ids=list(self.attribution.workspace_ids),
                           estimate_usd=str(estimate))
            raise BudgetExceeded(scope=exc.scope, renews_on=exc.renews_on) from exc

    def release(self, cost: Decimal = Decimal(0)) -> None:
        """Settle the reservation once: with the call's real cost, or none if it never ran."""
        if self.reservation is not None:
            reservation, self.reservation = self.reservation, None
            budget_settle(reservation=reservation, cost=cost)

    def record(
        self,
        *,
        outcome: Outcome,
        usage: Usage,
        error: BaseException | None = None,
        request_id: str | None = None,
    ) -> None:
        if self.model is None:
            self.release()
            return
        cost = cost_usd(provider=self.model.provider, model=self.model.model, usage=usage)
        self.release(cost)
        ai_usage_observe(feature=self.attribution.feature, input_tokens=usage.input_tokens,
                         output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
                         cost_usd=float(cost))
        if not settings.AI_RECORD_USAGE:
            return
        if isinstance(error, AIError):
            request_id = request_id or error.request_id
        usage_record(
            attribution=self.attribution,
            provider=self.model.provider,
            model=self.model.model,
            usage=usage,
            latency_ms=self.elapsed_ms(),
            outcome=outcome,
            attempts=self.attempts,
            time_to_first_token_ms=self.first_token_ms,
            error_class=type(error).__name__ if error else "",
            request_id=request_id,
            cost=cost,
        )

    def run(self, models: Sequence[M], send: Callable[[M, float], T]) -> tuple[M, T, float]:
        """Send to each model in turn, retrying by policy; return the first success."""
        policy = RetryPolicy.from_settings()
        error: AIError | None = None
        # Models take seconds: no pooled connection is held idle meanwhile.
        connection_give_back()
        for model in models:
            circuit = Circuit(model.circuit_key)
            self.model = model
            for attempt in itertools.count(1):
                if not circuit.allows():
                    error = CircuitOpen(provider=model.provider)
                    self.log(model, outcome="circuit_open", started=time.monotonic(), error=error)
                    break
                self.attempts += 1
                started = time.monotonic()
                try:
                    result = send(model, settings.AI_TIMEOUT_SECONDS)
                except AIError as exc:
                    error = exc
                    opened = exc.counts_against_provider and circuit.failed()
                    delay = None if opened else policy.delay(error=exc, attempt=attempt)
                    self.log(model, outcome="error", started=started, error=exc, retry_in=delay)
                    if delay is None:
                        break
                    time.sleep(delay)
                else:
                    circuit.succeeded()
                    return model, result, started
            assert error is not None
            if not _may_fall_back(error):
                break
        if error is None:
            raise ValueError("no model to send the request to")
        raise error


def _chat_chain() -> list[BaseChatModel]:
    return chat_models.chain()


def _prompt(request: ChatRequest) -> list[str]:
    return [*(f"{m.role}: {m.content}" for m in request.messages), *request.context]


def _chat_call(operation: str, request: ChatRequest, attribution: Attribution,
               chain: Sequence[BaseChatModel]) -> _Call:
    call = _Call(operation=operation, attribution=attribution, prompt=_prompt(request))
    # Language models read the context through the messages: those are what is sent.
    call.reserve(chain, input_chars=sum(len(m.content) for m in request.messages),
                 output_tokens=request.max_output_tokens or settings.AI_BUDGET_OUTPUT_TOKENS)
    return call


def _completion(request: ChatRequest) -> Callable[[BaseChatModel, float], ChatResult]:
    def send(model: BaseChatModel, timeout: float) -> ChatResult:
        model.validate(request)
        return model.complete(request, timeout=timeout)

    return send


def _recorded(call: _Call, attempt: Callable[[], tuple[M, R, float]]) -> R:
    """Return what ``attempt`` answered (model, result, start), logged and in the ledger."""
    try:
        model, result, started = attempt()
    except AIError as error:
        call.record(outcome=Outcome.ERROR, usage=Usage(), error=error)
        raise
    except BaseException:
        call.release()
        raise
    call.log(model, outcome="ok", started=started, usage=result.usage,
             request_id=result.request_id)
    call.record(outcome=Outcome.OK, usage=result.usage, request_id=result.request_id)
    return result


def chat_complete(*, request: ChatRequest, attribution: Attribution) -> ChatResult:
    """Return the answer of the first configured chat model able to give one."""
    chain = _chat_chain()
    call = _chat_call("chat", request, attribution, chain)
    return _recorded(call, lambda: call.run(chain, _completion(request)))


def chat_model_try(*, model: BaseChatModel, request: ChatRequest,
                   attribution: Attribution) -> ChatResult:
    """Send ``request`` once to ``model``, configured or not: no retry, no fallback, and
    no circuit breaker (a model being tried says nothing of the configured one's health).

    Logged and recorded in the ledger like any call.
    """
    call = _chat_call("chat", request, attribution, [model])
    return _tried_once(call, model, _completion(request))


def _tried_once(call: _Call, model: M, send: Callable[[M, float], R]) -> R:
    """Send once to ``model`` (no retry, no circuit breaker), logged and in the ledger."""

    def once() -> tuple[M, R, float]:
        call.model, call.attempts = model, 1
        started = time.monotonic()
        connection_give_back()
        try:
            return model, send(model, settings.AI_TIMEOUT_SECONDS), started
        except AIError as error:
            call.log(model, outcome="error", started=started, error=error)
            raise

    return _recorded(call, once)


class ChatStream(Iterator[str]):
    """The text of an answer as it arrives; ``result`` holds the whole answer at the end."""

    def __init__(self, pieces: Generator[str, None, ChatResult], call: _Call) -> None:
        self._pieces = pieces
        self._call = call
        self.result: ChatResult | None = None

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as stop:
            self.result = stop.value
            raise

    def close(self) -> None:
        """Stop the stream early; the call is recorded as cancelled."""
        self._pieces.close()
        # A stream closed before it was first read made no call: free what it reserved.
        self._call.release()


def chat_stream(*, request: ChatRequest, attribution: Attribution) -> ChatStream:
    """Return the answer as a stream; nothing is sent until it is first read.

    The budget is checked at once, so an exhausted one is refused before a response starts.
    """
    chain = _chat_chain()
    call = _chat_call("stream", request, attribution, chain)
    return ChatStream(_stream_pieces(request, call, chain), call)


def _stream_pieces(
    request: ChatRequest, call: _Call, chain: Sequence[BaseChatModel]
) -> Generator[str, None, ChatResult]:
    def send(
        model: BaseChatModel, timeout: float
    ) -> tuple[Iterator[StreamChunk], StreamChunk | None]:
        model.validate(request)
        chunks = model.stream(request, timeout=timeout)
        # Until the first chunk arrives, a failure can still be retried or fall back;
        # after it, the reader has seen part of one model's answer and it must end there.
        return chunks, next(chunks, None)

    try:
        model, (chunks, first), started = call.run(chain, send)
    except AIError as error:
        call.record(outcome=Outcome.ERROR, usage=Usage(), error=error)
        raise
    call.first_token_ms = call.elapsed_ms()
    pieces: list[str] = []
    usage = Usage()
    request_id: str | None = None
    outcome, failure = Outcome.CANCELLED, None
    try:
        for chunk in itertools.chain([first] if first else [], chunks):
            usage = chunk.usage or usage
            request_id = chunk.request_id or request_id
            if chunk.text:
                pieces.append(chunk.text)
                yield chunk.text
        outcome = Outcome.OK
    except Exception as exc:
        outcome, failure = Outcome.ERROR, exc
        raise
    finally:
        call.log(model, outcome=outcome.value, started=started, usage=usage, error=failure,
                 request_id=request_id)
        call.record(outcome=outcome, usage=usage, error=failure, request_id=request_id)
    return ChatResult(text="".join(pieces), model=model.id, usage=usage, request_id=request_id,
                      extractive=model.extractive)


def embeddings_create(
    *, texts: Sequence[str], attribution: Attribution, model_spec: str | None = None
) -> EmbeddingResult:
    """Return one vector per text from the configured embedding model (or ``model_spec``)."""
    # No fallback here: vectors from different models cannot be compared with each other.
    model = embedding_model_for(model_spec) if model_spec else embedding_models["default"]
    if not texts:
        return EmbeddingResult(vectors=[], model=model.id, usage=Usage())
    call = _Call(operation="embed", attribution=attribution, prompt=texts)
    call.reserve([model], input_chars=sum(len(text) for text in texts), output_tokens=0)
    vectors: list[list[float]] = []
    usage = Usage()
    request_id: str | None = None
    try:
        for start in range(0, len(texts), model.max_batch_size):
            batch = texts[start:start + model.max_batch_size]

            def send(
                model: BaseEmbeddingModel, timeout: float, batch: Sequence[str] = batch
            ) -> EmbeddingResult:
                model.validate(batch)
                return model.embed(batch, timeout=timeout)

            _, result, started = call.run([model], send)
            call.log(model, outcome="ok", started=started, usage=result.usage,
                     request_id=result.request_id)
            vectors.extend(result.vectors)
            usage += result.usage
            request_id = result.request_id or request_id
    except AIError as error:
        call.record(outcome=Outcome.ERROR, usage=usage, error=error)
        raise
    except BaseException:
        call.release()
        raise
    call.record(outcome=Outcome.OK, usage=usage, request_id=request_id)
    return EmbeddingResult(vectors=vectors, model=model.id, usage=usage, request_id=request_id)


def embedding_model_try(*, model: BaseEmbeddingModel, texts: Sequence[str],
                        attribution: Attribution) -> EmbeddingResult:
    """Embed ``texts`` once with ``model``, configured or not: no retry and no circuit
    breaker, like ``chat_model_try``. Logged and recorded in the ledger like any call."""
    call = _Call(operation="embed", attribution=attribution, prompt=texts)
    call.reserve([model], input_chars=sum(len(text) for text in texts), output_tokens=0)

    def send(model: BaseEmbeddingModel, timeout: float) -> EmbeddingResult:
        model.validate(texts)
        return model.embed(texts, timeout=timeout)

    return _tried_once(call, model, send)


def models_loading_here(*, embedding: bool, chat: bool) -> list[BaseModel]:
    """Return the default models asked about that their first call would load here."""
    models: list[BaseModel] = [
        *([embedding_models["default"]] if embedding else []),
        *([chat_models["default"]] if chat else []),
    ]
    return [model for model in models if model.loads_here()]
