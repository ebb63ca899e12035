"""Errors a user may see: each has a stable code, an HTTP status and a message.

Services raise these; one handler in :mod:`aistack.api` renders them as
``{"error": {"code", "message"}}``. Anything else is logged and shown as a generic 500.
"""

from __future__ import annotations

from typing import Any


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
