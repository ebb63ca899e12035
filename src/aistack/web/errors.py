"""Friendly HTML pages for errors, so browsers never see a JSON error or a bare status."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template import loader

from aistack.ai.exceptions import AIError, app_error_for
from aistack.errors import (
    AppError,
    Forbidden,
    NotFound,
    error_response,
    retry_after_set,
)

_HEADINGS = {
    403: "You can't do that here",
    404: "We couldn't find that page",
    429: "Please wait a moment",
    500: "Something went wrong on our side",
    503: "A service we need is unavailable",
}


def error_page(request: HttpRequest, error: AppError) -> HttpResponse:
    """Render ``error`` as a page, or as the API's JSON to a script that asked for JSON."""
    if not request.accepts("text/html"):
        return error_response(error)
    return retry_after_set(render(request, "web/error.html", {
        "status": error.status, "code": error.code,
        "heading": _HEADINGS.get(error.status, "That did not work"),
        "message": error.message,
        "retry_after": getattr(error, "retry_after", None),
    }, status=error.status), error)


class ErrorPageMiddleware:
    """Turn the errors a page's view raises into friendly pages with the right status."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Render application and provider errors; leave the rest to Django's handlers."""
        if isinstance(exception, AIError):
            return error_page(request, app_error_for(exception))
        if isinstance(exception, AppError):
            return error_page(request, exception)
        return None


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer 403 with a friendly page."""
    return error_page(request, Forbidden())


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Answer a request that failed its CSRF check with 403 and what to do about it."""
    return error_page(request, Forbidden(
        "This form was sent without its security token, or the token has expired. Reload "
        "the page and try again."))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer 404 with a friendly page."""
    return error_page(request, NotFound("There is nothing at this address."))


def server_error(request: HttpRequest) -> HttpResponse:
    """Answer 500 with a page that needs neither the database nor the session."""
    # Rendered without the request's context processors: whatever failed may be
    # what they would read.
    html = loader.get_template("web/error.html").render({
        "status": 500, "heading": _HEADINGS[500],
        "message": "The error has been logged. Please try again in a moment.",
    })
    return HttpResponse(html, status=500)
