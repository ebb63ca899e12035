"""The moving-window rate limiter every per-user and per-address limit counts with."""

from __future__ import annotations

from functools import cache

from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from aistack.redis.connections import redis_client


@cache
def moving_window_limiter() -> MovingWindowRateLimiter:
    """Return this process's limiter, counting in Redis under ``aistack:ratelimit``."""
    # The scheme only names the storage; connections come from this process's pool.
    return MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=redis_client()
                                                .connection_pool, key_prefix="aistack:ratelimit"))


@cache
def limits_parsed(spec: str) -> list[RateLimitItem]:
    """Return the limits of ``spec`` (``60/minute;1000/day``); none for an empty one."""
    return parse_many(spec) if spec else []
