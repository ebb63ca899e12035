"""Errors a user may see: each has a stable code, an HTTP status and a message.

Services raise these; ``error_response`` renders them as ``{"error": {"code",
"message"}}`` for the API's one handler (:mod:`aistack.api`). Anything else is logged
and shown as a generic 500. What a failed model call tells the user is decided in
:func:`aistack.ai.exceptions.app_error_for`.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from django.http import HttpResponse, JsonResponse


class AppError(Exception):
    """Something went wrong."""

    code = "error"
    status = 400

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)


class BadRequest(AppError):
    """The request is malformed."""

    code = "bad_request"
    status = 400


class Unauthenticated(AppError):
    """Authentication is required: log in or send an API token."""

    code = "unauthenticated"
    status = 401


class MethodNotAllowed(AppError):
    """This endpoint does not take that method."""

    code = "method_not_allowed"
    status = 405


class Forbidden(AppError):
    """You do not have permission to do this."""

    code = "forbidden"
    status = 403


class NotFound(AppError):
    """Not found."""

    code = "not_found"
    status = 404


class Conflict(AppError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class PayloadTooLarge(AppError):
    """The request body is too large."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(AppError):
    """This file type is not supported."""

    code = "unsupported_media_type"
    status = 415


class Invalid(AppError):
    """The input is invalid."""

    code = "invalid"
    status = 422


class Unavailable(AppError):
    """A service this request needs is unavailable; try again shortly."""

    code = "unavailable"
    status = 503


class RateLimited(AppError):
    """Too many requests; try again later."""

    code = "rate_limited"
    status = 429

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, details: Any = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class BudgetExceeded(AppError):
    """The monthly AI budget is used up."""

    code = "budget_exceeded"
    status = 429


class BadGateway(AppError):
    """A service this request needs sent an answer we could not use."""

    code = "bad_gateway"
    status = 502


class AIUnavailable(Unavailable):
    """The AI model is unavailable right now; try again shortly."""

    code = "ai_unavailable"


class AITimeout(Unavailable):
    """The AI model did not answer in time; try again shortly."""

    code = "ai_timeout"


class AIRateLimited(RateLimited):
    """The AI provider is busy; try again in a moment."""

    code = "ai_rate_limited"


class AIBadGateway(BadGateway):
    """The AI provider could not give a usable answer."""

    code = "ai_bad_gateway"


ResponseT = TypeVar("ResponseT", bound=HttpResponse)


def error_response(error: AppError) -> JsonResponse:
    """Render an error as ``{"error": {"code", "message"}}`` with its status."""
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    return retry_after_set(JsonResponse({"error": body}, status=error.status), error)


def retry_after_set(response: ResponseT, error: AppError) -> ResponseT:
    """Tell a rate-limited client, in whole seconds rounded up, when to try again."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        response["Retry-After"] = str(math.ceil(error.retry_after))
    return response
