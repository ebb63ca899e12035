"""Health endpoints, the landing page and document pages."""

from __future__ import annotations

import time

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from aistack.documents.selectors import document_get
from aistack.documents.summaries import summary_shown
from aistack.errors import NotFound
from aistack.jobs.tasks import HEARTBEAT_KEY

WORKER_HEARTBEAT_MAX_AGE_SECONDS = 60


def healthz(request: HttpRequest) -> HttpResponse:
    """Answer while the process is alive; checks nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    cache.set("readyz", "1", timeout=10)
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


def index(request: HttpRequest) -> HttpResponse:
    """Show what this server offers."""
    return render(request, "web/index.html")


@login_required
def document_page(request: HttpRequest, document_id: int) -> HttpResponse:
    """Show a document and its summary, which updates live as its job progresses."""
    # Taken before the state is read: events after it are replayed when the page subscribes.
    rendered_at = time.time()
    try:
        document = document_get(user=request.user, document_id=document_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    return render(request, "web/document.html", {
        "document": document,
        "summary": summary_shown(document=document),
        "rendered_at": rendered_at,
    })
