"""Cache reads are counted in the process and sent to Redis by a thread of their own."""

from __future__ import annotations

import time

from django.utils import timezone

from aistack.redis.connections import redis_client
from aistack.usage.services import (
    CACHE_COUNTS_FLUSH_SECONDS,
    CACHE_COUNTS_KEY,
    cache_lookups_flush,
    cache_lookups_record,
)


def test_a_read_is_counted_without_a_redis_call_and_sent_within_seconds(
    clean_redis: None,
) -> None:
    key = CACHE_COUNTS_KEY.format(day=timezone.now().date().isoformat())
    cache_lookups_flush()  # what earlier tests of this process counted
    redis_client().delete(key)
    started = time.perf_counter()
    cache_lookups_record(cache="summary", feature="summary", workspace_id=7, hits=3, misses=1)
    recorded = time.perf_counter() - started

    assert redis_client().hgetall(key) == {}  # nothing sent by the caller
    deadline = time.monotonic() + CACHE_COUNTS_FLUSH_SECONDS * 3
    while not redis_client().hgetall(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    # No further read was needed for the counts to go out.
    sent = redis_client().hgetall(key)
    assert (sent[b"summary|summary|7|hit"], sent[b"summary|summary|7|miss"]) == (b"3", b"1")
    assert recorded < 0.005
