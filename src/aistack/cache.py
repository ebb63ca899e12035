"""The cache backend: Django's Redis cache, answering as an empty cache while Redis is down.

Redis holds speed, never data, so losing it must not fail a request: a read that
cannot reach Redis is a miss and a write is dropped, and the caller goes to
PostgreSQL (or the model) as it would on any miss. Counters (``incr``) still
raise, because a caller that counts needs to know its count was not kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

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
        try:
            return super().get(key, default, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("get", exc)
            return default

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return the cached values found; none when Redis is unreachable."""
        try:
            return super().get_many(keys, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("get_many", exc)
            return {}

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return whether the key is cached; False when Redis is unreachable."""
        try:
            return super().has_key(key, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("has_key", exc)
            return False

    def set(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT,
            version: int | None = None) -> None:
        """Cache a value; dropped when Redis is unreachable."""
        try:
            super().set(key, value, timeout, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("set", exc)

    def add(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT,
            version: int | None = None) -> bool:
        """Cache a value unless the key exists; False when Redis is unreachable."""
        try:
            return super().add(key, value, timeout, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("add", exc)
            return False

    def set_many(self, data: dict[Any, Any], timeout: float | None = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        """Cache many values; returns the keys not stored (all when Redis is unreachable)."""
        try:
            return super().set_many(data, timeout, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("set_many", exc)
            return list(data)

    def touch(self, key: Any, timeout: float | None = DEFAULT_TIMEOUT,
              version: int | None = None) -> bool:
        """Extend a key's life; False when Redis is unreachable."""
        try:
            return super().touch(key, timeout, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("touch", exc)
            return False

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Delete a key; False when Redis is unreachable (it expires on its own)."""
        try:
            return super().delete(key, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("delete", exc)
            return False

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Delete keys; dropped when Redis is unreachable (they expire on their own)."""
        try:
            super().delete_many(keys, version)
        except REDIS_UNREACHABLE as exc:
            _unreachable("delete_many", exc)


def cache_forget(*keys: str) -> None:
    """Drop cached entries derived from rows this transaction changes.

    At once, for this transaction's own later reads, and again once committed, in
    case another process refilled them from the old rows meanwhile.
    """
    if not keys:
        return
    cache.delete_many(list(keys))
    transaction.on_commit(lambda: cache.delete_many(list(keys)), robust=True)
