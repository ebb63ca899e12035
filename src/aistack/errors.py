"""Errors a user may see: each has a stable code, an HTTP status and a message.

Services raise these; one handler in :mod:`aistack.api` renders them as
``{"error": {"code", "message"}}``. Anything else is logged and shown as a generic 500.
"""

from __future__ import annotations

from typing import Any

from aistack.ai import exceptions as ai_exceptions


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


def app_error_for(error: ai_exceptions.AIError) -> AppError:
    """Return what the user is told about a provider error: never the provider's own words."""
    if isinstance(error, ai_exceptions.InvalidRequest):
        return Invalid(error.message)
    if isinstance(error, ai_exceptions.BudgetExceeded):
        return BudgetExceeded(error.message)
    if isinstance(error, ai_exceptions.RateLimited):
        return AIRateLimited(retry_after=error.retry_after)
    if isinstance(error, ai_exceptions.Timeout):
        return AITimeout()
    if isinstance(error, ai_exceptions.Rejected | ai_exceptions.BadResponse):
        return AIBadGateway()
    # Connection failures, outages, open circuits and misconfiguration: the operator's
    # problem, and from the user's side all the same thing.
    return AIUnavailable()
