"""The cache backend: Django's Redis cache, answering as an empty cache while Redis is down.

Redis holds speed, never data, so losing it must not fail a request: a read that
cannot reach Redis is a miss and a write is dropped, and the caller goes to
PostgreSQL (or the model) as it would on any miss. Counters (``incr``) still
raise, because a caller that counts needs to know its count was not kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.cache import cache
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aistack.transactions import after_commit

logger = logging.getLogger(__name__)
T = TypeVar("T")

REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# One warning per this many seconds and process: an outage must not flood the logs.
_WARN_EVERY_SECONDS = 30.0
_last_warned = 0.0


def _unreachable(operation: str, exc: Exception) -> None:
    global _last_warned
    now = time.monotonic()
    if now - _last_warned >= _WARN_EVERY_SECONDS:
        _last_warned = now
        logger.warning("cache unreachable (%s: %s); serving without it", operation, exc)


def _soft(default: T, operation: Callable[..., T], *args: Any) -> T:
    """Return ``operation(*args)``, or ``default`` when Redis is unreachable."""
    try:
        return operation(*args)
    except REDIS_UNREACHABLE as exc:
        _unreachable(operation.__name__, exc)
        return default


class _ReusedClientRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, keeping one ``redis.Redis`` per connection pool.

    Django builds a new client object for every cache call (about 0.13 ms here); the
    client is a thin, thread-safe wrapper around its pool, so one per pool suffices.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[bool, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """Return the client for reads or writes, built once."""
        client = self._clients.get(write)
        if client is None:
            client = self._clients[write] = super().get_client(key, write=write)
        return client


class FailSoftRedisCache(RedisCache):
    """A Redis cache whose reads miss and whose writes are dropped while Redis is unreachable."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusedClientRedisCacheClient

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value, or ``default`` when missing or Redis is unreachable."""
        return _soft(default, super().get, key, default, version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return the cached values found; none when Redis is unreachable."""
        return _soft({}, super().get_many, keys, version)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return whether the key is cached; False when Redis is unreachable."""
        return _soft(False, super().has_key, key, version)

    def set(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT,
            version: int | None = None) -> None:
        """Cache a value; dropped when Redis is unreachable."""
        _soft(None, super().set, key, value, timeout, version)

    def add(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT,
            version: int | None = None) -> bool:
        """Cache a value unless the key exists; False when Redis is unreachable."""
        return _soft(False, super().add, key, value, timeout, version)

    def set_many(self, data: dict[Any, Any], timeout: float | None = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        """Cache many values; returns the keys not stored (all when Redis is unreachable)."""
        return _soft(list(data), super().set_many, data, timeout, version)

    def touch(self, key: Any, timeout: float | None = DEFAULT_TIMEOUT,
              version: int | None = None) -> bool:
        """Extend a key's life; False when Redis is unreachable."""
        return _soft(False, super().touch, key, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Delete a key; False when Redis is unreachable (it expires on its own)."""
        return _soft(False, super().delete, key, version)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Delete keys; dropped when Redis is unreachable (they expire on their own)."""
        _soft(None, super().delete_many, keys, version)


def cache_forget(*keys: str) -> None:
    """Drop cached entries derived from rows this transaction changes.

    At once, for this transaction's own later reads, and again once committed, in
    case another process refilled them from the old rows meanwhile.
    """
    if not keys:
        return
    cache.delete_many(list(keys))
    after_commit(cache.delete_many, list(keys))
