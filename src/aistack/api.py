"""The JSON API at /api/v1 and its one error handler."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from aistack.accounts.auth import API_AUTH
from aistack.ai.exceptions import AIError, app_error_for
from aistack.cache import REDIS_UNREACHABLE
from aistack.chat.api import router as chat_router
from aistack.documents.api import router as documents_router
from aistack.errors import (
    AppError,
    BadRequest,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    error_response,
)
from aistack.realtime.api import router as events_router
from aistack.retrieval.api import ask_router
from aistack.retrieval.api import router as search_router
from aistack.usage.api import router as usage_router

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="aistack",
    version="1",
    description="Documents, search, answers and chat for a team knowledge base.",
    auth=API_AUTH,
    urls_namespace="api-v1",
)


@api.exception_handler(AppError)
def on_app_error(request: HttpRequest, exc: AppError) -> HttpResponse:
    return error_response(exc)


@api.exception_handler(AIError)
def on_ai_error(request: HttpRequest, exc: AIError) -> HttpResponse:
    return error_response(app_error_for(exc))


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors
    ]
    return error_response(Invalid("; ".join(problems) or "The input is invalid.",
                                  details=[{"loc": e.get("loc"), "msg": e.get("msg")}
                                           for e in exc.errors]))


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(Unauthenticated())


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    error = AppError(str(exc))
    error.status = exc.status_code
    error.code = {400: "bad_request", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed"}.get(exc.status_code, "error")
    return error_response(error)


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(NotFound())


@api.exception_handler(PermissionDenied)
def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(Forbidden())


@api.exception_handler(MultiPartParserError)
def on_bad_multipart(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
    # A body that says it is multipart and is not: no boundary, a part's headers too long.
    return error_response(BadRequest(f"The form data could not be read: {exc}"))


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(PayloadTooLarge())


def on_service_down(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Answer 503 while PostgreSQL (or Redis, where a request cannot do without it) is down."""
    logger.warning("service unavailable on %s %s: %s", request.method, request.path, exc)
    return error_response(Unavailable())


for _service_error in (OperationalError, InterfaceError, *REDIS_UNREACHABLE):
    api.exception_handler(_service_error)(on_service_down)


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    error = AppError("Something went wrong on our side; it has been logged.")
    error.status, error.code = 500, "internal_error"
    return error_response(error)


api.add_router("/documents", documents_router)
api.add_router("/chat", chat_router)
api.add_router("/search", search_router)
api.add_router("/ask", ask_router)
api.add_router("/events", events_router)
api.add_router("/usage", usage_router)


def api_method_not_allowed(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Middleware: the API's 405s (Ninja answers them in plain text) in its error shape."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if response.status_code != 405 or not request.path.startswith("/api/"):
            return response
        allowed = response.get("Allow", "")
        shaped = error_response(MethodNotAllowed(
            f"{request.path} takes {allowed or 'no other method'}, not {request.method}."))
        shaped["Allow"] = allowed
        return shaped

    return middleware


def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Answer unknown API paths in JSON, like every other API error."""
    return error_response(NotFound(f"No API endpoint at {request.path}."))
