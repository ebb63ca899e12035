"""The MCP SDK's own client, driving aistack's MCP server over Streamable HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx2
from django.db import connections
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

T = TypeVar("T")


@asynccontextmanager
async def connected(address: str, token: str | None,
                    statuses: list[int] | None = None) -> AsyncIterator[Client]:
    """A client of the server at ``address`` (host:port) sending ``token`` as its bearer;
    the status of each HTTP response it gets is added to ``statuses``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with httpx2.AsyncClient(headers=headers, timeout=30,
                                  event_hooks={"response": [record]}) as http:
        transport = streamable_http_client(f"http://{address}/mcp", http_client=http)
        async with Client(transport) as client:
            yield client


async def in_thread(work: Callable[[], T]) -> T:
    """Run ``work`` (database work of the test's own) in a thread, giving its
    connection back to the pool after, as a request's thread does."""

    def done() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    return await anyio.to_thread.run_sync(done)


def run(address: str, token: str | None, scenario: Callable[[Client], Awaitable[T]],
        statuses: list[int] | None = None) -> T:
    """Connect, run ``scenario`` with the client, and return what it returns."""

    async def main() -> T:
        async with connected(address, token, statuses) as client:
            return await scenario(client)

    return anyio.run(main)


def structured(result: Any) -> Any:
    """Return a successful tool call's structured content."""
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result: Any) -> str:
    """Return a failed tool call's message."""
    assert result.is_error, result.structured_content
    return " ".join(block.text for block in result.content)
