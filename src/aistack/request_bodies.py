"""Request bodies, read with limits before Django sees them.

Django's ASGI handler reads a whole body (spooling it to disk past 2 MB) before any
middleware runs, so the size limit, authentication and CSRF act only once every byte has
arrived, and a chunked body has no limit at all. Here a body is read with two: no request
sends more than its path accepts (``body_limit``), and a request without credentials (a
valid bearer token, or the session of a signed-in user) no more than
``ANONYMOUS_BODY_BYTES``. A request over either is answered at once, and the rest of its
body is never read: the server closes the connection after the answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.db import connections
from django.http.cookie import parse_cookie

from aistack.accounts.selectors import credentials_valid
from aistack.documents.middleware import body_limit
from aistack.errors import AppError, PayloadTooLarge, Unauthenticated

# What a request may send before anyone knows who sent it: any form a visitor fills in
# (signing in, say) is far smaller.
ANONYMOUS_BODY_BYTES = 64 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyRefused(Exception):
    """The body was refused before it was read whole; ``error`` says why."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.message)
        self.error = error


def _credentials_valid(headers: Mapping[bytes, bytes]) -> bool:
    try:
        cookies = parse_cookie(headers.get(b"cookie", b"").decode("latin1"))
        return credentials_valid(
            authorization=headers.get(b"authorization", b"").decode("latin1"),
            session_key=cookies.get(settings.SESSION_COOKIE_NAME))
    finally:
        connections.close_all()  # this thread's: a pool thread, not the request's


async def body_read(scope: Mapping[str, Any], receive: Receive) -> IO[bytes]:
    """Return the request's body, read within its limits; raise ``BodyRefused`` if over."""
    limit = body_limit(scope["path"])
    headers = {name.lower(): value for name, value in scope["headers"]}
    too_large = PayloadTooLarge(f"The body is larger than {limit:,} bytes, the most "
                                f"{scope['path']} accepts.")
    try:
        declared: int | None = int(headers[b"content-length"])
    except (KeyError, ValueError):
        declared = None
    if declared is not None and declared > limit:
        raise BodyRefused(too_large)
    trusted = False

    async def trust() -> None:
        nonlocal trusted
        if not trusted:
            if not await sync_to_async(_credentials_valid, thread_sensitive=False)(headers):
                raise BodyRefused(Unauthenticated(
                    f"Sign in, or send an API token, to send a body over "
                    f"{ANONYMOUS_BODY_BYTES // 1024} KiB."))
            trusted = True

    if declared is not None and declared > ANONYMOUS_BODY_BYTES:
        await trust()
    # Handed open to the caller, which closes it once the response is sent.
    body = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise BodyRefused(too_large)
            if received > ANONYMOUS_BODY_BYTES:
                await trust()
            body.write(chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body
