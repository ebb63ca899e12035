"""Per-user rate limits on the AI endpoints, counted in Redis by the ``limits`` library."""

from __future__ import annotations

import logging
import math
import time
from functools import cache

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from aistack.errors import RateLimited
from aistack.observability.metrics import rate_limited_requests
from aistack.redis.connections import redis_client

logger = logging.getLogger(__name__)

# One budget of requests per user shared by every AI endpoint: asking, chatting,
# searching and summarizing all spend the same model time.
_NAMESPACE = "ai"


@cache
def _limiter() -> MovingWindowRateLimiter:
    # The scheme only names the storage; connections come from this process's pool.
    return MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=redis_client()
                                                .connection_pool, key_prefix="aistack:ratelimit"))


@cache
def _items(spec: str) -> list[RateLimitItem]:
    return parse_many(spec)


def ai_rate_limit_hit(*, user: User | AnonymousUser) -> None:
    """Count one AI request against the user's limits, or raise RateLimited (429)."""
    if not settings.AI_RATE_LIMIT or not user.is_authenticated:
        return
    limiter = _limiter()
    identity = str(user.pk)
    try:
        for item in _items(settings.AI_RATE_LIMIT):
            if not limiter.hit(item, _NAMESPACE, identity):
                reset_at = limiter.get_window_stats(item, _NAMESPACE, identity).reset_time
                rate_limited_requests.inc()
                raise RateLimited(
                    f"Too many AI requests: at most {item}. Try again shortly.",
                    retry_after=max(1, math.ceil(reset_at - time.time())),
                )
    except RedisError as exc:
        # Losing Redis may cost the limit, never the request.
        logger.warning("rate limit not checked: %s", exc)
