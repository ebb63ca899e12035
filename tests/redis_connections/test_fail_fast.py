"""While Redis is down, every client of the process fails at once instead of waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aistack.ai.backends import local
from aistack.ai.exceptions import WorkersUnreachable
from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.jobs import services as jobs
from aistack.redis import connections
from aistack.redis.connections import redis_client_for, redis_outage_active
from tests.jobs.test_state import queued_messages

FAIL_OVER_SECONDS = 0.05


@pytest.fixture
def no_outage() -> Iterator[None]:
    """Leave the process's memory of an outage as found: other tests use the real Redis."""
    connections._outage_until = 0.0
    yield
    connections._outage_until = 0.0


@pytest.fixture
def dead_redis(tmp_path: Path, no_outage: None) -> redis.Redis:
    return redis_client_for(f"unix://{tmp_path / 'gone.sock'}")


def _timed_failure(client: redis.Redis) -> tuple[float, str]:
    started = time.perf_counter()
    with pytest.raises(RedisConnectionError) as failure:
        client.ping()
    return time.perf_counter() - started, str(failure.value)


def test_a_failed_connection_fails_at_once_and_is_remembered_briefly(
    dead_redis: redis.Redis,
) -> None:
    first, _ = _timed_failure(dead_redis)
    assert first < FAIL_OVER_SECONDS
    assert redis_outage_active()
    second, reason = _timed_failure(dead_redis)
    assert second < FAIL_OVER_SECONDS and "moments ago" in reason

    connections._outage_until = time.monotonic() - 1  # OUTAGE_SECONDS later
    assert not redis_outage_active()
    _, reason = _timed_failure(dead_redis)  # tried again, and failed again
    assert "moments ago" not in reason and redis_outage_active()


def test_the_local_model_through_the_workers_fails_without_retrying(
    dead_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "redis_client", lambda: dead_redis)
    started = time.perf_counter()
    with pytest.raises(WorkersUnreachable) as failure:
        local.encode_remote(["a query"], timeout=5)
    assert time.perf_counter() - started < FAIL_OVER_SECONDS
    # Not retried by the choke point: Redis does not come back within a backoff.
    assert not failure.value.retryable and failure.value.counts_against_provider


def test_sending_a_job_while_redis_is_down_leaves_it_to_the_reconciler(
    dead_redis: redis.Redis, clean_redis: None
) -> None:
    _timed_failure(dead_redis)  # the process has seen Redis fail
    started = time.perf_counter()
    jobs._send_all([DOCUMENT_INDEX], [1, 2, 3])  # as on a commit
    assert time.perf_counter() - started < FAIL_OVER_SECONDS
    connections._outage_until = 0.0
    assert queued_messages() == 0  # not sent: the reconciler sends them once Redis is back
