"""Redis clients for pub/sub and locks (the cache goes through Django's cache framework)."""

from __future__ import annotations

from functools import cache

import redis
import redis.asyncio
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    """Return this process's client; its connection pool is shared by every thread."""
    return redis.Redis.from_url(settings.REDIS_URL)


def async_redis_client() -> redis.asyncio.Redis:
    """Return a new asyncio client, to be closed by the caller (it belongs to one event loop)."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL)
