"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from aistack.jobs.tasks import HEARTBEAT_KEY
from aistack.redis.connections import redis_client

WORKER_HEARTBEAT_MAX_AGE_SECONDS = 60


def healthz(request: HttpRequest) -> HttpResponse:
    """Answer while the process is alive; checks nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    # Asked directly: the cache answers as if empty while Redis is down (aistack.cache).
    redis_client().ping()
    return "ok"


def _check_worker() -> str:
    beat = cache.get(HEARTBEAT_KEY)
    if beat is None:
        return "no heartbeat yet"
    age = time.time() - float(beat)
    return "ok" if age <= WORKER_HEARTBEAT_MAX_AGE_SECONDS else f"last heartbeat {age:.0f}s ago"


def readyz(request: HttpRequest) -> HttpResponse:
    """Report whether the database, Redis and a worker are usable (503 when not)."""
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("redis", _check_redis),
                        ("worker", _check_worker)):
        try:
            checks[name] = check()
        except Exception as exc:  # a readiness probe reports failures, it does not raise them
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)
