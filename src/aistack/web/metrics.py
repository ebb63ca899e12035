"""``/metrics``: Prometheus metrics for loopback clients or holders of ``METRICS_TOKEN``."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from aistack.errors import Forbidden, Unauthenticated, error_response
from aistack.jobs.broker import QueueDepthCollector
from aistack.observability.metrics import exposition


def _from_loopback(request: HttpRequest) -> bool:
    # A proxy on this machine makes every client look local; what it forwards is not.
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _has_token(request: HttpRequest) -> bool:
    expected: str | None = settings.METRICS_TOKEN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Return every process's metrics in the Prometheus text format."""
    if not (_from_loopback(request) or _has_token(request)):
        if settings.METRICS_TOKEN:
            return error_response(Unauthenticated("Send the metrics token as a bearer token."))
        return error_response(Forbidden("Metrics are served to this machine only; set "
                                        "METRICS_TOKEN to scrape them from elsewhere."))
    body, content_type = exposition(QueueDepthCollector())
    return HttpResponse(body, content_type=content_type)
