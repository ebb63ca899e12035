"""Refuse oversized uploads before their bodies are read."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from aistack.errors import PayloadTooLarge, error_response

# The API's upload endpoint and the web page's form.
UPLOAD_PATHS = frozenset({"/api/v1/documents/upload", "/documents/upload/"})
# Room for the multipart envelope around the file itself.
_ENVELOPE_BYTES = 64 * 1024


def body_limit(path: str) -> int:
    """Return the most bytes a request to ``path`` may send as its body."""
    if path in UPLOAD_PATHS:
        return int(settings.UPLOAD_MAX_BYTES) + _ENVELOPE_BYTES
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class UploadSizeLimitMiddleware:
    """Answer 413 from Content-Length alone: Django would otherwise spool the whole body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path in UPLOAD_PATHS:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > body_limit(request.path):
                return error_response(PayloadTooLarge(
                    f"The upload is {declared:,} bytes; the limit is "
                    f"{settings.UPLOAD_MAX_BYTES:,}."))
        return self.get_response(request)
