"""Password guessing is throttled: failed log-ins are counted per account and per client
address in Redis (the ``limits`` library, moving windows), and past either limit a try
is refused before its password is hashed.

Only failures count, so a user who types their password right is never slowed down;
and every window expires, so throttling ends at most one window after the guessing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
import unicodedata
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters
from limits import RateLimitItem
from redis.exceptions import RedisError

from aistack.errors import RateLimited, retry_after_set
from aistack.redis.ratelimits import limits_parsed, moving_window_limiter

logger = logging.getLogger(__name__)

ViewFunction = Callable[..., HttpResponseBase]


def _account(username: str) -> str:
    # Normalized as the log-in form does, so that a variant spelling counts as the same
    # account; hashed, so that whatever strangers type never becomes a Redis key's name.
    normalized = unicodedata.normalize("NFKC", username.strip())
    return hashlib.sha256(normalized.encode()).hexdigest()


def _network(address: str) -> str:
    # An IPv6 client usually holds a whole /64: its addresses count as one.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def _windows(*, username: str, address: str | None) -> Iterator[tuple[RateLimitItem, str, str]]:
    for item in limits_parsed(settings.LOGIN_FAILURES_PER_ACCOUNT):
        yield item, "login-account", _account(username)
    if address is not None:
        for item in limits_parsed(settings.LOGIN_FAILURES_PER_ADDRESS):
            yield item, "login-address", _network(address)


def login_address(request: HttpRequest | None) -> str | None:
    """Return the address a log-in comes from, as the web server saw it."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def login_throttle_check(*, username: str, address: str | None) -> int | None:
    """Return the seconds to wait before ``username`` may be tried from ``address``, or None."""
    limiter = moving_window_limiter()
    now = time.time()
    waits = []
    try:
        for item, namespace, identity in _windows(username=username, address=address):
            window = limiter.get_window_stats(item, namespace, identity)
            if window.remaining <= 0:
                waits.append(max(1, math.ceil(window.reset_time - now)))
    except RedisError as exc:
        # Losing Redis may cost the throttle, never the log-in.
        logger.warning("log-in throttle not checked: %s", exc)
        return None
    return max(waits, default=None)


def login_failure_record(*, username: str, address: str | None) -> None:
    """Count one failed log-in against the account and the address."""
    limiter = moving_window_limiter()
    try:
        for item, namespace, identity in _windows(username=username, address=address):
            limiter.hit(item, namespace, identity)
    except RedisError as exc:
        logger.warning("failed log-in not counted: %s", exc)


def _throttled_error(wait: int) -> RateLimited:
    minutes = math.ceil(wait / 60)
    when = f"{wait} seconds" if wait < 120 else f"{minutes} minutes"
    return RateLimited(f"Too many failed log-ins for this account or from your address. "
                       f"Try again in {when}.", retry_after=wait)


def login_throttled(view: ViewFunction, *, template_name: str) -> ViewFunction:
    """Wrap a log-in view: while its account or address is throttled, a try is answered 429
    with ``template_name`` (the log-in form and the reason) and no password is hashed."""

    # The password must stay out of error reports even if the check itself fails.
    @wraps(view)
    @sensitive_post_parameters("password")
    def throttled_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        wait = login_throttle_check(username=username, address=login_address(request))
        if wait is None:
            return view(request, *args, **kwargs)
        error = _throttled_error(wait)
        next_url = request.POST.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            next_url = ""
        return retry_after_set(render(request, template_name, {
            "form": AuthenticationForm(request, initial={"username": username}),
            REDIRECT_FIELD_NAME: next_url,
            "throttled": error.message,
        }, status=error.status), error)

    return throttled_view


class LoginThrottleBackend:
    """An authentication backend, listed first, that stops every ``authenticate()`` call
    while the log-in is throttled, before a later backend hashes the password."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     **credentials: Any) -> None:
        """Refuse (PermissionDenied) while throttled; otherwise leave it to the next backend."""
        wait = login_throttle_check(username=username or "", address=login_address(request))
        if wait is not None:
            raise PermissionDenied
