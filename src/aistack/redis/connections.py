"""Redis clients for pub/sub and locks (the cache goes through Django's cache framework).

Redis holds speed, never data, so every caller already carries on without it. What this
module adds is that carrying on is quick: clients do not retry (callers have their own
policies), connecting gives up after ``CONNECT_TIMEOUT_SECONDS``, and once a connection
has failed, every client of the process fails at once for ``OUTAGE_SECONDS`` instead of
each paying its own failure. After that one call tries again, and so on until Redis is back.

With ``REDIS_SENTINELS`` every client, the cache's included, reaches the master through
Redis Sentinel: a new connection asks the sentinels where the master is, and a connection
to a master that is gone or was demoted fails, so the next one finds the new master.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 1.0
OUTAGE_SECONDS = 2.0
# Connections a process keeps per pool. Without a cap a burst of requests grows a pool
# to its peak concurrency, and every connection stays open afterwards (with a 64 KB read
# buffer each); past the cap a caller waits up to POOL_WAIT_SECONDS for a free one.
POOL_CONNECTIONS = 64
POOL_WAIT_SECONDS = 2.0

_outage_until = 0.0
_outage_lock = threading.Lock()


def redis_outage_seen() -> None:
    """Note that Redis could not be reached: callers skip it for ``OUTAGE_SECONDS``."""
    global _outage_until
    with _outage_lock:
        _outage_until = time.monotonic() + OUTAGE_SECONDS


def redis_outage_active() -> bool:
    """Return whether Redis failed moments ago, so that trying again now would only wait."""
    return time.monotonic() < _outage_until


class FailFastRetry(Retry):
    """No retries; while an outage is fresh, fail without trying; note any new one."""

    def __init__(self) -> None:
        super().__init__(NoBackoff(), 0)

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any],
                        *args: Any, **kwargs: Any) -> T:
        """Call ``do`` once, unless Redis failed moments ago."""
        if redis_outage_active():
            raise RedisConnectionError("Redis was unreachable moments ago; not trying yet")
        try:
            return super().call_with_retry(do, fail, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError):
            redis_outage_seen()
            raise


_RETRY = FailFastRetry()


def tcp_options(url: str) -> dict[str, Any]:
    """Return the keepalive options of a client of ``url``: none over a Unix socket."""
    if url.startswith("unix://"):
        return {}
    return {"socket_keepalive": True, "socket_keepalive_options": settings.REDIS_TCP_KEEPALIVE}


def client_options(url: str) -> dict[str, Any]:
    """Return the options every synchronous Redis client of ``url`` is built with.

    Equal every time: clients are shared by their options (``aistack.cache``).
    """
    return {"retry": _RETRY, "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "pool_class": redis.BlockingConnectionPool, "max_connections": POOL_CONNECTIONS,
            "timeout": POOL_WAIT_SECONDS, **tcp_options(url)}


class SentinelBlockingConnectionPool(redis.sentinel.SentinelConnectionPool,
                                     redis.BlockingConnectionPool):
    """Sentinel's pool, capped as every pool here is: past the cap a caller waits."""


def _master_options(url: str) -> dict[str, Any]:
    """Return what ``url`` says of the master other than where it is: user, password, database."""
    parts = urlsplit(url)
    return {"username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "db": int(parts.path.strip("/") or 0)}


def redis_client_for(url: str) -> redis.Redis:
    """Return a new client of the Redis at ``url``, built as every client here is.

    Through Sentinel, ``url`` names the master (``redis://mymaster/0``).
    """
    options = client_options(url)
    pool_class = options.pop("pool_class")
    if settings.REDIS_SENTINELS:
        sentinel = redis.sentinel.Sentinel(settings.REDIS_SENTINELS,
                                           sentinel_kwargs=settings.REDIS_SENTINEL_OPTIONS)
        master: redis.Redis = sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER, connection_pool_class=SentinelBlockingConnectionPool,
            **_master_options(url), **options)
        return master
    return redis.Redis(connection_pool=pool_class.from_url(url, **options))


# One set of sentinel connections per event loop (they belong to the loop that made them),
# however many clients ask through them: the event relay makes a new client per attempt.
_async_sentinels: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, redis.asyncio.sentinel.Sentinel] = weakref.WeakKeyDictionary()


def _async_sentinel() -> redis.asyncio.sentinel.Sentinel:
    loop = asyncio.get_running_loop()
    sentinel = _async_sentinels.get(loop)
    if sentinel is None:
        sentinel = _async_sentinels[loop] = redis.asyncio.sentinel.Sentinel(
            settings.REDIS_SENTINELS, sentinel_kwargs=settings.REDIS_SENTINEL_OPTIONS)
    return sentinel


def async_redis_client_for(url: str, **options: Any) -> redis.asyncio.Redis:
    """Return a new asyncio client of the Redis at ``url`` (through Sentinel if set).

    Call it in the event loop that will use the client.
    """
    if settings.REDIS_SENTINELS:
        sentinel = _async_sentinel()
        master: redis.asyncio.Redis = sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER, **_master_options(url), **tcp_options(url),
            **options)
        return master
    return redis.asyncio.Redis.from_url(url, **tcp_options(url), **options)


@cache
def redis_client() -> redis.Redis:
    """Return this process's client; its connection pool is shared by every thread."""
    return redis_client_for(settings.REDIS_URL)


def async_redis_client(**options: Any) -> redis.asyncio.Redis:
    """Return a new asyncio client, to be closed by the caller (it belongs to one event loop)."""
    return async_redis_client_for(settings.REDIS_URL,
                                  socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, **options)
