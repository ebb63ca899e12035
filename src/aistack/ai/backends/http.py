"""What the HTTP backends share: the guard that keeps tests off paid providers."""

from __future__ import annotations

import ipaddress

import httpx2
from django.conf import settings


class NetworkBlocked(RuntimeError):
    """A request to a non-loopback host was attempted while AI_LOOPBACK_ONLY is on."""


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names this machine (no DNS lookup is made)."""
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_remote(request: httpx2.Request) -> None:
    if not is_loopback(request.url.host):
        # Not an AIError on purpose: nothing retries or falls back past it, the test fails.
        raise NetworkBlocked(
            f"AI_LOOPBACK_ONLY is on: refusing to send a request to {request.url.host}"
        )


def reraise_if_blocked(exc: BaseException) -> None:
    """Re-raise the guard's refusal when an SDK wrapped it as a connection error."""
    if isinstance(exc.__cause__, NetworkBlocked):
        raise exc.__cause__


def http_client(*, timeout: float) -> httpx2.Client | None:
    """Return the HTTP client a vendor SDK must use: its own unless loopback-only is on."""
    if not settings.AI_LOOPBACK_ONLY:
        return None
    return httpx2.Client(timeout=timeout, event_hooks={"request": [_refuse_remote]})
