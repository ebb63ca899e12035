"""Reading server-sent event bodies in tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import async_to_sync


async def _read(content: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in content])


def sse_events(body: bytes) -> list[tuple[str, Any]]:
    """Split an event-stream body into (event name, decoded JSON data) pairs."""
    events = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def streamed_events(response: Any) -> list[tuple[str, Any]]:
    """Read a test-client streaming response to the end and return its events."""
    return sse_events(async_to_sync(_read)(response.streaming_content))
