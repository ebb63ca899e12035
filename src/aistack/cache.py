"""The cache backend: Django's Redis cache, answering as an empty cache while Redis is down.

Redis holds speed, never data, so losing it must not fail a request: a read that
cannot reach Redis is a miss and a write is dropped, and the caller goes to
PostgreSQL (or the model) as it would on any miss. Counters (``incr``) still
raise, because a caller that counts needs to know its count was not kept.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import redis.asyncio
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aistack.redis.connections import async_redis_client_for, client_options, redis_client_for
from aistack.transactions import after_commit

logger = logging.getLogger(__name__)
T = TypeVar("T")

REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# One warning per this many seconds and process: an outage must not flood the logs.
_WARN_EVERY_SECONDS = 30.0
_last_warned = 0.0
# An asynchronous read waits at most this long: a stuck Redis must not hang requests.
ASYNC_TIMEOUT_SECONDS = 1.0


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


# Clients (and so connection pools) shared by every cache object of the process, by
# server list and options: Django makes a cache object per thread, and under ASGI per
# request, each of which would otherwise open connections of its own and never close
# them. Two web processes under load ran Redis out of its 10,000 clients that way.
_shared_clients: dict[tuple[Any, ...], Any] = {}
_shared_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


class _SharedClientRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, with one ``redis.Redis`` per process and server list.

    Django builds a new client for every cache call (about 0.13 ms here) and a new
    connection pool for every cache object; the client is a thin, thread-safe wrapper
    around its pool, so one per process suffices.
    """

    def __init__(self, servers: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(servers, *args, **kwargs)
        self._shared_key = (tuple(servers), repr(args), repr(sorted(kwargs.items())))
        self._url = servers[0]

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """Return the process's client for reads or writes, built once."""
        shared_key = (*self._shared_key, write)
        client = _shared_clients.get(shared_key)
        if client is None:
            with _shared_lock:
                client = _shared_clients.get(shared_key)
                if client is None:
                    client = _shared_clients[shared_key] = (
                        redis_client_for(self._url) if settings.REDIS_SENTINELS
                        else super().get_client(key, write=write))
        return client


class FailSoftRedisCache(RedisCache):
    """A Redis cache whose reads miss and whose writes are dropped while Redis is unreachable.

    ``aget`` and ``aget_many`` are truly asynchronous (Django's run the synchronous
    call in a thread): the event loop serves other requests while Redis answers.
    """

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        # Fail fast, as every Redis client of the process does (see aistack.redis.connections).
        first = re.split("[;,]", server)[0] if isinstance(server, str) else server[0]
        params = {**params, "OPTIONS": {**client_options(first), **params.get("OPTIONS", {})}}
        super().__init__(server, params)
        self._class = _SharedClientRedisCacheClient
        # What the synchronous client uses by default (CACHES sets no other): both read
        # and write the same bytes.
        self._async_url = first
        self._async_serializer = RedisSerializer()
        # Equal bytes, one object: see ``aget_many_shared``.
        self._shared_loads = functools.lru_cache(maxsize=512)(self._async_serializer.loads)

    def _async_client(self) -> redis.asyncio.Redis:
        # An asyncio connection belongs to the loop that made it: one client per loop.
        loop = asyncio.get_running_loop()
        clients = _shared_async_clients.setdefault(loop, {})
        client = clients.get(self._async_url)
        if client is None:
            client = clients[self._async_url] = async_redis_client_for(
                self._async_url, socket_timeout=ASYNC_TIMEOUT_SECONDS,
                socket_connect_timeout=ASYNC_TIMEOUT_SECONDS)
        return client

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value, or ``default`` when missing or Redis is unreachable."""
        found = await self.aget_many([key], version=version)
        return found.get(key, default)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return the cached values found; none when Redis is unreachable."""
        return await self._aget_many(keys, version, self._async_serializer.loads)

    async def aget_many_shared(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """Like ``aget_many``, but the values are shared: never change what this returns.

        Equal bytes are unpickled once per process (the last 512 seen) and every caller
        gets that one object. For hot reads of entries that rarely change, where
        unpickling a model instance costs more than the round trip to Redis.
        """
        return await self._aget_many(keys, None, self._shared_loads)

    async def _aget_many(self, keys: Iterable[Any], version: int | None,
                         loads: Callable[[bytes], Any]) -> dict[Any, Any]:
        # Our own keys: Django's check for memcached-unsafe characters is not needed.
        names = {self.make_key(key, version=version): key for key in keys}
        try:
            values: list[Any] = await self._async_client().mget(list(names))
        except REDIS_UNREACHABLE as exc:
            _unreachable("aget_many", exc)
            return {}
        return {key: loads(value)
                for key, value in zip(names.values(), values, strict=True) if value is not None}

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


@functools.cache
def event_loop_cache() -> FailSoftRedisCache:
    """The default cache as one object per process, for code running in the event loop.

    ``django.core.cache.cache`` is a cache object per thread, and in the event loop one
    per task: a new object (and its setup) for every request. Our asynchronous reads
    keep no state of their own, so one object serves every task.
    """
    return cast(FailSoftRedisCache, caches.create_connection(DEFAULT_CACHE_ALIAS))


@receiver(setting_changed)
def _forget_event_loop_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        event_loop_cache.cache_clear()


def cache_forget(*keys: str) -> None:
    """Drop cached entries derived from rows this transaction changes.

    At once, for this transaction's own later reads, and again once committed, in
    case another process refilled them from the old rows meanwhile.
    """
    if not keys:
        return
    cache.delete_many(list(keys))
    after_commit(cache.delete_many, list(keys))


def content_hash(text: str) -> str:
    """Return the hash that identifies a version of some text: versioned keys carry it."""
    return hashlib.sha256(text.encode()).hexdigest()
