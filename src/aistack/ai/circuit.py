"""A circuit breaker per provider, with its state in the shared cache (Redis).

Keeping the state in Redis rather than in each process means that when a provider
dies, every web and worker process stops calling it after the same few failures,
instead of each one paying its own timeouts first. Redis holds speed, never data:
if the cache cannot be reached the breaker stays closed and calls go through.

Each process reads that state at most once per ``AI_CIRCUIT_REFRESH_SECONDS`` and
keeps its own failures up to date at once, so a healthy call costs no Redis round
trip, and a circuit another process opened is seen within that interval.

After ``AI_CIRCUIT_FAILURE_THRESHOLD`` consecutive failures the circuit opens for
``AI_CIRCUIT_OPEN_SECONDS``; calls skip the provider meanwhile. When that time is
up, calls go through again as probes: the failure count is kept, so one more
failure reopens the circuit at once, and one success closes it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Failures older than this many open periods no longer count: "consecutive" means recent.
_FAILURE_MEMORY_PERIODS = 10
_CACHE_ERRORS = (RedisError, OSError)


@dataclass(frozen=True)
class _Snapshot:
    read_at: float
    is_open: bool
    failures: int


# What this process last knew of each circuit, keyed like the cache keys.
_snapshots: dict[str, _Snapshot] = {}


class Circuit:
    """The breaker of one provider, as seen by one call."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._open_key = f"ai:circuit:{key}:open"
        self._failures_key = f"ai:circuit:{key}:failures"

    def _snapshot(self) -> _Snapshot:
        now = time.monotonic()
        known = _snapshots.get(self.key)
        if known is not None and now - known.read_at < settings.AI_CIRCUIT_REFRESH_SECONDS:
            return known
        try:
            state = cache.get_many([self._open_key, self._failures_key])
        except _CACHE_ERRORS:
            logger.warning("circuit %s: cache unreachable, letting calls through", self.key)
            state = {}
        known = _Snapshot(read_at=now, is_open=self._open_key in state,
                          failures=int(state.get(self._failures_key) or 0))
        _snapshots[self.key] = known
        return known

    def allows(self) -> bool:
        """Return whether a call may go to the provider now."""
        return not self._snapshot().is_open

    def succeeded(self) -> None:
        """Close the circuit: the provider answered."""
        if not self._snapshot().failures:
            return
        _snapshots[self.key] = _Snapshot(read_at=time.monotonic(), is_open=False, failures=0)
        try:
            cache.delete(self._failures_key)
        except _CACHE_ERRORS:
            logger.warning("circuit %s: cache unreachable, could not reset", self.key)

    def failed(self) -> bool:
        """Count a failure; return whether the circuit is now open."""
        # Redis expires keys in whole seconds, and a zero timeout would delete the key.
        open_seconds = math.ceil(settings.AI_CIRCUIT_OPEN_SECONDS)
        try:
            cache.add(self._failures_key, 0, timeout=open_seconds * _FAILURE_MEMORY_PERIODS)
            failures = cache.incr(self._failures_key)
            is_open = failures >= settings.AI_CIRCUIT_FAILURE_THRESHOLD
            if is_open:
                cache.set(self._open_key, failures, timeout=open_seconds)
        except (*_CACHE_ERRORS, ValueError):
            # ValueError: the counter expired between add and incr; one lost count is harmless.
            return False
        _snapshots[self.key] = _Snapshot(read_at=time.monotonic(), is_open=is_open,
                                         failures=failures)
        if not is_open:
            return False
        logger.warning("circuit %s: open for %ss after %d failures in a row",
                       self.key, open_seconds, failures)
        return True
