"""Redis through Sentinel: every client of the process (cache, locks, rate limits, pub/sub,
Celery's broker) reaches the master the sentinels name, and follows them to a new one when
the master dies, with a real master, replica and three sentinels."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from kombu import Connection

from aistack import cache as cache_module
from aistack.config import Config
from aistack.redis import connections
from aistack.redis.locks import single_flight
from aistack.redis.ratelimits import limits_parsed, moving_window_limiter
from harness import wait_for
from harness.sentinel import MASTER_NAME, SentinelRedis


def _forget_clients() -> None:
    connections.redis_client.cache_clear()
    moving_window_limiter.cache_clear()
    cache_module._shared_clients.clear()
    connections._outage_until = 0.0


@pytest.fixture
def sentinel_redis(settings: Any) -> Iterator[SentinelRedis]:
    with SentinelRedis(Path(tempfile.mkdtemp(prefix="aistack-sentinel-"))) as group:
        url = group.environ()["REDIS_URL"]
        settings.REDIS_URL = url
        settings.REDIS_SENTINELS = [("127.0.0.1", port) for port in group.sentinels]
        settings.REDIS_SENTINEL_MASTER = MASTER_NAME
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
        sentinels = [("127.0.0.1", port) for port in group.sentinels]
        settings.CELERY_BROKER_URL = Config.celery_broker_url(url, sentinels)
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
            **settings.CELERY_BROKER_TRANSPORT_OPTIONS, "master_name": MASTER_NAME,
            "sentinel_kwargs": settings.REDIS_SENTINEL_OPTIONS}
        _forget_clients()
        try:
            yield group
        finally:
            _forget_clients()


def _on(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1)


def _broker_round_trip(queue: str, body: dict[str, int], master: int) -> Any:
    """Publish a message to ``queue`` through the broker settings, see it queued on the
    master, and read it back."""
    broker = Connection(settings.CELERY_BROKER_URL,
                        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    with broker, broker.SimpleQueue(queue) as simple:
        simple.put(body)
        assert _on(master).llen(queue) == 1
        message = simple.get(timeout=10)
        message.ack()
        return message.payload


async def _published_and_heard(channel: str, text: bytes) -> Any:
    client = connections.async_redis_client()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        await connections.async_redis_client().publish(channel, text)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=1)
            if message is not None:
                return message["data"]
        return None
    finally:
        await pubsub.aclose()
        await client.aclose()


def _every_client_works(group: SentinelRedis, master: int, round_: str) -> None:
    cache.set(f"sentinel-{round_}", round_, 60)
    assert cache.get(f"sentinel-{round_}") == round_
    # On the master the sentinels name, not merely somewhere.
    assert _on(master).exists(f"aistack:1:sentinel-{round_}")

    with single_flight(f"sentinel-{round_}") as holder:
        assert holder
        assert _on(master).exists(f"aistack:lock:sentinel-{round_}")

    limit = limits_parsed("2/minute")[0]
    limiter = moving_window_limiter()
    assert [limiter.hit(limit, round_) for _ in range(3)] == [True, True, False]

    assert asyncio.run(_published_and_heard(f"sentinel-{round_}", b"hello")) == b"hello"
    assert asyncio.run(cache_module.event_loop_cache().aget(f"sentinel-{round_}")) == round_

    assert _broker_round_trip(f"sentinel-{round_}", {"round": 1}, master) == {"round": 1}


def test_every_client_follows_the_sentinels_to_a_new_master(
        sentinel_redis: SentinelRedis) -> None:
    first = sentinel_redis.master_port()
    assert first == sentinel_redis.first_master
    _every_client_works(sentinel_redis, first, "before")

    old = sentinel_redis.kill_master()
    # No master: a read is a miss and a write is dropped, as with Redis down.
    assert cache.get("sentinel-before", "missed") == "missed"
    new = sentinel_redis.wait_for_new_master(old)

    # The replica had the master's data, and the same clients (pools kept) now reach it.
    time.sleep(connections.OUTAGE_SECONDS)
    assert cache.get("sentinel-before") == "before"
    _every_client_works(sentinel_redis, new, "after")

    # The old master, back, is made a replica of the new one, and the clients stay there.
    sentinel_redis.restart(old)
    wait_for(lambda: sentinel_redis.role(old) == "slave", timeout=30,
             message="the sentinels to demote the old master")
    cache.set("sentinel-last", "last", 60)
    assert _on(new).exists("aistack:1:sentinel-last")
    assert sentinel_redis.failovers() == 1


def test_the_health_check_answers_through_the_sentinels(
        sentinel_redis: SentinelRedis, client: Any) -> None:
    assert client.get("/readyz").json()["checks"]["redis"] == "ok"
