"""Errors from model providers, classified by what a retry can do about them.

Backends wrap every vendor error in one of these (``raise ... from exc``), so the
service layer decides retries and fallbacks without knowing any vendor's SDK.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import date
from typing import ClassVar

from aistack import errors


class AIError(Exception):
    """The model provider could not serve the request."""

    # Whether the same request may succeed if sent again to the same model.
    retryable: ClassVar[bool] = False
    # Whether the failure says the provider is unhealthy (it counts towards its circuit breaker).
    counts_against_provider: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(self.message)

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.provider}: {self.message}{status}"


class ConnectionFailed(AIError):
    """The connection to the model provider failed."""

    retryable = True
    counts_against_provider = True


class WorkersUnreachable(ConnectionFailed):
    """The workers that run the local model cannot be reached: Redis, between us, is down."""

    # Redis is back in seconds or minutes, not in a retry's backoff: fail now, and let the
    # caller fall back (hybrid search to its keyword half) or its job retry later.
    retryable = False


class Timeout(AIError):
    """The model provider did not answer in time."""

    retryable = True
    counts_against_provider = True


class RateLimited(AIError):
    """The model provider is rate limiting us."""

    retryable = True

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str,
        status_code: int | None = 429,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, request_id=request_id)
        self.retry_after = retry_after


class Unavailable(AIError):
    """The model provider is failing (5xx)."""

    retryable = True
    counts_against_provider = True


class Overloaded(Unavailable):
    """The model provider is overloaded."""


class CircuitOpen(Unavailable):
    """The model provider failed repeatedly and is skipped for a while."""

    retryable = False
    # Skipping a provider is not new evidence against it.
    counts_against_provider = False


class Rejected(AIError):
    """The model provider refused the request (4xx)."""


class InvalidRequest(AIError):
    """The request cannot be sent to this model as it is."""


class BadResponse(AIError):
    """The model provider sent a response that could not be read."""


class Misconfigured(AIError):
    """The model is not configured correctly (key, address or model name)."""


class BudgetExceeded(AIError):
    """A monthly AI budget would be crossed: the call was not made."""

    def __init__(self, *, scope: str, renews_on: date) -> None:
        who = "This workspace has" if scope == "workspace" else "You have"
        super().__init__(
            f"{who} used up this month's AI budget; it renews on {renews_on:%B} {renews_on.day}.",
            provider="",
        )
        self.scope = scope
        self.renews_on = renews_on

    def __str__(self) -> str:
        return self.message


def error_for_status(
    status_code: int,
    *,
    provider: str,
    message: str | None,
    request_id: str | None,
    headers: Mapping[str, str],
) -> AIError:
    """Return the error for an HTTP error status from a provider."""
    if status_code == 429:
        return RateLimited(
            message, provider=provider, request_id=request_id,
            retry_after=retry_after_seconds(headers),
        )
    if status_code == 529:
        return Overloaded(message, provider=provider, status_code=status_code,
                          request_id=request_id)
    if status_code in {401, 403, 404}:
        # Bad key, no access or unknown model: an operator must fix the configuration.
        return Misconfigured(message, provider=provider, status_code=status_code,
                             request_id=request_id)
    if status_code == 408:
        return Timeout(message, provider=provider, status_code=status_code, request_id=request_id)
    if status_code >= 500 or status_code == 409:
        return Unavailable(message, provider=provider, status_code=status_code,
                           request_id=request_id)
    return Rejected(message, provider=provider, status_code=status_code, request_id=request_id)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return how long a response asks us to wait, from ``retry-after(-ms)`` headers."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def app_error_for(error: AIError) -> errors.AppError:
    """Return what the user is told about a provider error: never the provider's own words."""
    if isinstance(error, InvalidRequest):
        return errors.Invalid(error.message)
    if isinstance(error, BudgetExceeded):
        return errors.BudgetExceeded(error.message)
    if isinstance(error, RateLimited):
        return errors.AIRateLimited(retry_after=error.retry_after)
    if isinstance(error, Timeout):
        return errors.AITimeout()
    if isinstance(error, Rejected | BadResponse):
        return errors.AIBadGateway()
    # Connection failures, outages, open circuits and misconfiguration: the operator's
    # problem, and from the user's side all the same thing.
    return errors.AIUnavailable()
