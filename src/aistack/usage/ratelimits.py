"""Per-user rate limits on the AI endpoints and on document writes, counted in Redis by the
``limits`` library."""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from redis.exceptions import RedisError

from aistack.errors import RateLimited
from aistack.observability.metrics import rate_limited_requests
from aistack.redis.ratelimits import limits_parsed, moving_window_limiter

logger = logging.getLogger(__name__)

# One budget of requests per user shared by every AI endpoint: asking, chatting,
# searching and summarizing all spend the same model time.
_AI = "ai"
# Another for creating, changing and deleting documents: each write queues work.
_WRITES = "writes"


def _hit(*, spec: str, namespace: str, user: User | AnonymousUser, what: str) -> None:
    if not spec or not user.is_authenticated:
        return
    limiter = moving_window_limiter()
    identity = str(user.pk)
    try:
        for item in limits_parsed(spec):
            if not limiter.hit(item, namespace, identity):
                reset_at = limiter.get_window_stats(item, namespace, identity).reset_time
                rate_limited_requests.labels(limit=namespace).inc()
                raise RateLimited(
                    f"Too many {what}: at most {item}. Try again shortly.",
                    retry_after=max(1, math.ceil(reset_at - time.time())),
                )
    except RedisError as exc:
        # Losing Redis may cost the limit, never the request.
        logger.warning("rate limit not checked: %s", exc)


def ai_rate_limit_hit(*, user: User | AnonymousUser) -> None:
    """Count one AI request against the user's limits, or raise RateLimited (429)."""
    _hit(spec=settings.AI_RATE_LIMIT, namespace=_AI, user=user, what="AI requests")


def write_rate_limit_hit(*, user: User | AnonymousUser) -> None:
    """Count one document write against the user's limits, or raise RateLimited (429)."""
    _hit(spec=settings.WRITE_RATE_LIMIT, namespace=_WRITES, user=user, what="document changes")
