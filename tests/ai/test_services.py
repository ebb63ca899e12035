"""The choke point: retries, backoff, fallback, circuit breaker, log lines and ledger rows."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache

from aistack.ai import services
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.ai.exceptions import (
    AIError,
    CircuitOpen,
    InvalidRequest,
    RateLimited,
    Rejected,
    Timeout,
    Unavailable,
)
from aistack.ai.services import RetryPolicy
from aistack.ai.types import ChatRequest, Message
from aistack.usage.models import Outcome, UsageRecord
from aistack.usage.types import Attribution, Usage
from tests.ai import vendors
from tests.ai.conftest import TEST_API_KEY
from tests.ai.vendors import VendorServer
from tests.conftest import model_entry

pytestmark = pytest.mark.django_db

REQUEST = ChatRequest(messages=(Message(role="user", content="Tell me about vacation days"),))
ATTRIBUTION = Attribution(feature="test", object_id=7, prompt_version="abc123")
P = "scripted"


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "aistack.ai"]


def _only_row() -> UsageRecord:
    rows = list(UsageRecord.objects.all())
    assert len(rows) == 1, rows
    return rows[0]


def test_a_call_writes_one_ledger_row_and_one_log_line(
    use_models: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    use_models("scripted:echo")
    scripted.script("echo", Reply(text="Twenty-five days.",
                                  usage=Usage(input_tokens=9, output_tokens=3)))
    caplog.set_level(logging.INFO, logger="aistack.ai")

    result = services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert result.text == "Twenty-five days."
    row = _only_row()
    assert (row.feature, row.object_id, row.prompt_version) == ("test", 7, "abc123")
    assert (row.provider, row.model, row.outcome) == ("scripted", "scripted:echo", Outcome.OK)
    assert (row.input_tokens, row.output_tokens, row.attempts) == (9, 3, 1)
    assert row.cost_usd == 0
    assert row.request_id.startswith("scripted-")
    [line] = _lines(caplog)
    assert line["event"] == "ai.attempt"
    assert (line["feature"], line["model"], line["outcome"]) == ("test", "scripted:echo", "ok")
    assert (line["input_tokens"], line["output_tokens"]) == (9, 3)
    assert isinstance(line["latency_ms"], int)
    assert "prompt" not in line
    assert "vacation" not in caplog.text


def test_prompts_are_logged_only_when_debug_logging_asks(
    use_models: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    use_models("scripted:echo")
    caplog.set_level(logging.DEBUG, logger="aistack.ai")

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert _lines(caplog)[0]["prompt"] == ["user: Tell me about vacation days"]


def test_transient_errors_are_retried_with_growing_backoff(
    use_models: Callable[..., None], caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.AI_MAX_ATTEMPTS = 4
    settings.AI_RETRY_BACKOFF_SECONDS = 0.05
    use_models("scripted:echo")
    scripted.script("echo", Unavailable(provider=P, status_code=503),
                    Timeout(provider=P), Unavailable(provider=P, status_code=500), Reply(text="ok"))
    caplog.set_level(logging.INFO, logger="aistack.ai")
    started = time.monotonic()

    result = services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert result.text == "ok"
    lines = _lines(caplog)
    assert [line["outcome"] for line in lines] == ["error", "error", "error", "ok"]
    assert [line["error_class"] for line in lines[:3]] == ["Unavailable", "Timeout",
                                                           "Unavailable"]
    waits = [line["retry_in_ms"] for line in lines[:3]]
    # Exponential with jitter in [0.5, 1]: 25-50 ms, 50-100 ms, 100-200 ms.
    assert 25 <= waits[0] <= 50 and 50 <= waits[1] <= 100 and 100 <= waits[2] <= 200
    assert time.monotonic() - started >= sum(waits) / 1000
    row = _only_row()
    assert (row.outcome, row.attempts) == (Outcome.OK, 4)


def test_rate_limits_wait_at_least_retry_after(use_models: Callable[..., None]) -> None:
    use_models("scripted:echo")
    scripted.script("echo", RateLimited(provider=P, retry_after=0.3), Reply(text="ok"))
    started = time.monotonic()

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert time.monotonic() - started >= 0.3


def test_retry_policy_is_data() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=1.0, backoff_max_seconds=3.0,
                         retry_after_max_seconds=10.0)

    assert policy.delay(error=Rejected(provider=P), attempt=1) is None
    assert policy.delay(error=Unavailable(provider=P), attempt=3) is None
    assert 0.5 <= (policy.delay(error=Unavailable(provider=P), attempt=1) or 0) <= 1.0
    assert 1.0 <= (policy.delay(error=Unavailable(provider=P), attempt=2) or 0) <= 2.0
    assert policy.delay(error=RateLimited(provider=P, retry_after=60), attempt=1) is None
    assert 5.5 <= (policy.delay(error=RateLimited(provider=P, retry_after=5), attempt=1) or 0) <= 6


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=20, backoff_seconds=1.0, backoff_max_seconds=3.0,
                         retry_after_max_seconds=10.0)
    assert (policy.delay(error=Unavailable(provider=P), attempt=15) or 0) <= 3.0


def test_fallback_serves_when_the_default_model_is_down(
    use_models: Callable[..., None], caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.AI_MAX_ATTEMPTS = 2
    use_models("scripted:unavailable", "scripted:echo")
    caplog.set_level(logging.INFO, logger="aistack.ai")

    result = services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert (result.text, result.model) == ("Tell me about vacation days", "scripted:echo")
    assert [(c.model, c.outcome) for c in scripted.calls()] == [
        ("unavailable", "Unavailable"), ("unavailable", "Unavailable"), ("echo", "ok")]
    assert [(line["alias"], line["outcome"]) for line in _lines(caplog)] == [
        ("default", "error"), ("default", "error"), ("fallback-1", "ok")]
    row = _only_row()
    assert (row.model, row.attempts, row.outcome) == ("scripted:echo", 3, Outcome.OK)


def test_a_long_retry_after_falls_back_at_once(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_RETRY_AFTER_MAX_SECONDS = 0.5
    use_models("scripted:echo", "scripted:timeout", "scripted:echo")
    scripted.script("echo", RateLimited(provider=P, retry_after=120), Reply(text="second echo"))
    settings.AI_MAX_ATTEMPTS = 1
    started = time.monotonic()

    result = services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert result.text == "second echo"
    assert time.monotonic() - started < 2
    assert [c.outcome for c in scripted.calls()] == ["RateLimited", "Timeout", "ok"]


def test_rejected_requests_are_neither_retried_nor_sent_elsewhere(
    use_models: Callable[..., None],
) -> None:
    use_models("scripted:echo", "scripted:echo")
    scripted.script("echo", Rejected(provider=P, status_code=400, request_id="req_bad"))

    with pytest.raises(Rejected):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert len(scripted.calls()) == 1
    row = _only_row()
    assert (row.outcome, row.error_class, row.request_id) == (Outcome.ERROR, "Rejected", "req_bad")


def test_invalid_requests_fail_before_any_call(use_models: Callable[..., None]) -> None:
    use_models("scripted:echo")

    with pytest.raises(InvalidRequest):
        services.chat_complete(request=ChatRequest(messages=()), attribution=ATTRIBUTION)

    assert scripted.calls() == []
    assert _only_row().error_class == "InvalidRequest"


def test_every_model_failing_raises_the_last_error_and_records_it(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_MAX_ATTEMPTS = 2
    use_models("scripted:unavailable", "scripted:timeout")

    with pytest.raises(Timeout):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    row = _only_row()
    assert (row.model, row.attempts, row.outcome, row.error_class) == (
        "scripted:timeout", 4, Outcome.ERROR, "Timeout")


def test_the_timeout_is_applied_to_each_attempt(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_TIMEOUT_SECONDS = 0.2
    settings.AI_MAX_ATTEMPTS = 2
    use_models("scripted:echo")
    scripted.script("echo", Reply(text="too late", delay=5), Reply(text="in time"))
    started = time.monotonic()

    result = services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert result.text == "in time"
    assert 0.2 <= time.monotonic() - started < 1.5
    assert [c.outcome for c in scripted.calls()] == ["Timeout", "ok"]


def test_the_circuit_opens_skips_the_provider_then_probes_it(
    use_models: Callable[..., None], caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.AI_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.AI_CIRCUIT_OPEN_SECONDS = 1
    settings.AI_MAX_ATTEMPTS = 2
    use_models("scripted:unavailable", "scripted:echo")

    for _ in range(2):  # 2 + 1 failures: the circuit opens on the third
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)
    assert [c.model for c in scripted.calls()].count("unavailable") == 3
    scripted.reset()
    caplog.set_level(logging.INFO, logger="aistack.ai")
    caplog.clear()

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    # Open: the dead provider is not called at all, the fallback answers at once.
    assert [c.model for c in scripted.calls()] == ["echo"]
    assert _lines(caplog)[0]["outcome"] == "circuit_open"
    time.sleep(1.1)
    scripted.reset()

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    # Half-open: one probe goes through, fails, and the circuit opens again at once.
    assert [c.model for c in scripted.calls()] == ["unavailable", "echo"]


def test_a_successful_probe_closes_the_circuit(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_CIRCUIT_FAILURE_THRESHOLD = 2
    settings.AI_CIRCUIT_OPEN_SECONDS = 1
    settings.AI_MAX_ATTEMPTS = 2
    use_models("scripted:echo")
    scripted.script("echo", Unavailable(provider=P), Unavailable(provider=P))
    with pytest.raises(Unavailable):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)
    with pytest.raises(CircuitOpen):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)
    time.sleep(1.1)

    assert services.chat_complete(request=REQUEST, attribution=ATTRIBUTION).text
    scripted.script("echo", Unavailable(provider=P))
    # Closed again: a single failure is retried, not treated as a dead provider.
    assert services.chat_complete(request=REQUEST, attribution=ATTRIBUTION).text


def test_rate_limits_do_not_open_the_circuit(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_CIRCUIT_FAILURE_THRESHOLD = 1
    settings.AI_MAX_ATTEMPTS = 1
    use_models("scripted:echo")
    scripted.script("echo", RateLimited(provider=P, retry_after=0))

    with pytest.raises(RateLimited):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert services.chat_complete(request=REQUEST, attribution=ATTRIBUTION).text


def test_a_stream_records_time_to_first_token_and_usage(use_models: Callable[..., None]) -> None:
    use_models("scripted:echo")
    scripted.script("echo", Reply(text="one two three", delay=0.1, chunk_delay=0.05,
                                  usage=Usage(input_tokens=4, output_tokens=3)))

    stream = services.chat_stream(request=REQUEST, attribution=ATTRIBUTION)
    pieces = list(stream)

    assert pieces == ["one", " two", " three"]
    assert stream.result is not None and stream.result.text == "one two three"
    row = _only_row()
    assert row.outcome == Outcome.OK
    assert (row.input_tokens, row.output_tokens) == (4, 3)
    assert row.time_to_first_token_ms is not None and row.time_to_first_token_ms >= 100
    assert row.latency_ms >= row.time_to_first_token_ms + 90


def test_a_stream_failing_before_its_first_token_falls_back(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_MAX_ATTEMPTS = 1
    use_models("scripted:unavailable", "scripted:echo")

    pieces = list(services.chat_stream(request=REQUEST, attribution=ATTRIBUTION))

    assert "".join(pieces) == "Tell me about vacation days"
    assert _only_row().model == "scripted:echo"


def test_a_stream_closed_early_is_recorded_as_cancelled(use_models: Callable[..., None]) -> None:
    use_models("scripted:echo")
    stream = services.chat_stream(request=REQUEST, attribution=ATTRIBUTION)

    assert next(stream) == "Tell"
    stream.close()

    assert _only_row().outcome == Outcome.CANCELLED


def test_a_stream_breaking_midway_is_an_error_without_retry(
    use_models: Callable[..., None], vendor: VendorServer
) -> None:
    use_models(model_entry("openai:gpt-4.1-mini", API_KEY=TEST_API_KEY,
                           BASE_URL=f"{vendor.url}/v1"), "scripted:echo")
    vendor.push(vendors.openai_stream(["one ", "two ", "three"], drop_after=2))
    stream = services.chat_stream(request=REQUEST, attribution=ATTRIBUTION)
    received: list[str] = []

    with pytest.raises(AIError):
        received.extend(stream)

    # Half an answer was shown: it is not silently replaced by another model's.
    assert received == ["one ", "two "]
    assert scripted.calls() == []
    row = _only_row()
    assert (row.outcome, row.error_class, row.model) == (
        Outcome.ERROR, "ConnectionFailed", "openai:gpt-4.1-mini")


def test_embeddings_are_batched_into_one_ledger_row(use_models: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")
    texts = [f"text number {n}" for n in range(150)]

    result = services.embeddings_create(texts=texts, attribution=ATTRIBUTION)

    assert len(result.vectors) == 150
    assert [len(c.messages) for c in scripted.calls()] == [64, 64, 22]
    row = _only_row()
    assert (row.attempts, row.input_tokens, row.outcome) == (3, 450, Outcome.OK)


def test_embedding_failures_are_retried_then_recorded(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_MAX_ATTEMPTS = 2
    use_models(embedding="scripted:hash")
    scripted.script("hash", Unavailable(provider=P), Unavailable(provider=P))

    with pytest.raises(Unavailable):
        services.embeddings_create(texts=["a"], attribution=ATTRIBUTION)

    assert (_only_row().outcome, _only_row().attempts) == (Outcome.ERROR, 2)


def test_no_ledger_rows_when_recording_is_off(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_RECORD_USAGE = False
    use_models("scripted:echo")

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert not UsageRecord.objects.exists()


def test_api_keys_never_reach_the_logs(
    use_models: Callable[..., None], vendor: VendorServer, caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.AI_MAX_ATTEMPTS = 2
    use_models(model_entry("openai:gpt-4.1-mini", API_KEY=TEST_API_KEY,
                           BASE_URL=f"{vendor.url}/v1"))
    vendor.push(vendors.openai_error(500), vendors.openai_chat("fine"))
    caplog.set_level(logging.DEBUG)

    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)

    assert [line["outcome"] for line in _lines(caplog)] == ["error", "ok"]
    assert TEST_API_KEY not in caplog.text
    row = _only_row()
    assert row.cost_usd > 0  # gpt-4.1-mini has a price in the table
    assert row.request_id == "req_openai_1"


def test_a_circuit_opened_by_another_process_is_seen_within_the_refresh_interval(
    use_models: Callable[..., None], settings: Any
) -> None:
    settings.AI_CIRCUIT_REFRESH_SECONDS = 0.5
    use_models("scripted:echo")
    services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)
    # What a worker process writes when the provider keeps failing there.
    cache.set("ai:circuit:scripted:echo:open", 5, timeout=30)

    # Healthy calls do not ask Redis every time: this process has not looked yet.
    assert services.chat_complete(request=REQUEST, attribution=ATTRIBUTION).text
    time.sleep(0.6)

    with pytest.raises(CircuitOpen):
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)


@pytest.mark.django_db(transaction=True)
def test_a_call_gives_its_database_connection_back_while_the_model_works(
    scripted_chat: Callable[..., None],
) -> None:
    # A request waiting on a model should not keep one of its process's few pooled
    # connections idle: while the model works, every connection is in the pool.
    from django.db import connection

    scripted_chat(latency=1.0)
    during: list[dict[str, int]] = []

    def request() -> None:
        UsageRecord.objects.count()  # the request has queried: it holds a connection
        assert connection.connection is not None
        services.chat_complete(request=REQUEST, attribution=ATTRIBUTION)
        connection.close()

    connection.close()  # this thread's, back to the pool: only the request's is counted
    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.5)
    pool = connection.pool
    assert pool is not None
    during.append(pool.get_stats())
    thread.join()
    stats = during[0]
    assert stats["pool_size"] >= 1
    assert stats["pool_available"] == stats["pool_size"], stats
    assert _only_row().outcome == Outcome.OK  # the call was still recorded afterwards
