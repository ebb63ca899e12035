"""Benchmark the MCP server: what an MCP ``search`` call adds to the same HTTP API search.

Run with ``python bench/mcp_search.py [--documents 300] [--rounds 400]``. It starts the embedded
PostgreSQL and Redis in a scratch home and one ``aistack web`` process (one worker),
indexes ``--documents`` documents for one user, then asks the same query each round
three ways, in an order that alternates, over kept-alive connections:

- ``GET /api/v1/search`` (the HTTP API);
- ``POST /mcp`` with a ``tools/call`` of ``search``, as one JSON-RPC request (what any
  MCP client sends per call to the stateless server);
- the MCP SDK's own ``Client.call_tool``, client-side work included.

It prints each one's p50 and p95 and the median, over rounds, of what MCP added to the
HTTP call of the same round (goal: <= 2 ms at p50). Search is hybrid; the embedding
model is the scripted one, and every query's vector is cached after its first round,
so the figures are of the transport, not of a model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_arguments, median, percentile
from bench.drills.stack import Stack

WORDS = ["deploy", "rollback", "review", "incident", "pager", "release", "budget", "laptop",
         "holiday", "invoice", "security", "backup", "database", "onboarding", "expense",
         "contract", "customer", "roadmap", "hiring", "training"]
QUERIES = 40


def _setup(documents: int) -> str:
    from aistack.accounts.services import api_token_create, user_create
    from aistack.documents.indexing import DOCUMENT_INDEX, document_index_run
    from aistack.documents.services import document_create
    from aistack.jobs.services import job_claim

    rng = random.Random(7)
    user = user_create(username="assistant-user")  # signs in with its token alone
    workspace = user.personal_workspace
    for n in range(documents):
        text = " ".join(". ".join(" ".join(rng.choices(WORDS, k=10)) for _ in range(5))
                        for _ in range(2))
        document = document_create(workspace=workspace, title=f"Runbook {n}",
                                   content=text + ".", author=user)
        run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk)
        assert run is not None
        document_index_run(run=run)
    return api_token_create(user=user, name="bench")[1]


async def _measure(base: str, token: str, rounds: int) -> dict[str, list[float]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    rng = random.Random(11)
    queries = [" ".join(rng.choices(WORDS, k=3)) for _ in range(QUERIES)]
    headers = {"Authorization": f"Bearer {token}"}
    timings: dict[str, list[float]] = {"http": [], "mcp": [], "sdk": []}
    async with (httpx2.AsyncClient(base_url=base, headers=headers, timeout=30) as http,
                httpx2.AsyncClient(headers=headers, timeout=30) as sdk_http,
                Client(streamable_http_client(f"{base}/mcp", http_client=sdk_http)) as sdk):

        async def over_http(query: str) -> None:
            response = await http.get("/api/v1/search", params={"q": query, "k": 10})
            assert response.status_code == 200, response.text
            assert response.json()["results"]

        async def over_mcp(query: str) -> None:
            response = await http.post("/mcp", json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "search", "arguments": {"query": query, "k": 10}}},
                headers={"Accept": "application/json, text/event-stream"})
            assert response.status_code == 200, response.text
            result = response.json()["result"]
            assert not result.get("isError") and result["structuredContent"]["results"]

        async def over_sdk(query: str) -> None:
            result = await sdk.call_tool("search", {"query": query, "k": 10})
            assert not result.is_error and result.structured_content["results"]

        ways = {"http": over_http, "mcp": over_mcp, "sdk": over_sdk}
        for query in queries:  # warm: code loaded, query vectors cached
            for call in ways.values():
                await call(query)
        for n in range(rounds):
            order = list(ways) if n % 2 == 0 else list(reversed(ways))
            for name in order:
                started = time.perf_counter()
                await ways[name](queries[n % QUERIES])
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=400)
    args = bench_arguments(parser, documents=20, rounds=20)
    # The per-user AI limit would refuse a bench's rate of searches: lifted, as in load.py.
    with Stack("mcp", AI_EMBEDDING_MODEL="scripted:hash", AI_RATE_LIMIT="1000000/minute",
               WRITE_RATE_LIMIT="1000000/minute") as stack:
        token = _setup(args.documents)
        base = stack.web()
        timings = asyncio.run(_measure(base, token, args.rounds))
    added = {way: median([t - h for t, h in zip(timings[way], timings["http"], strict=True)])
             for way in ("mcp", "sdk")}
    figures: dict[str, Any] = {
        "documents": args.documents, "rounds": args.rounds,
        **{way: {"p50_ms": round(median(values), 2),
                 "p95_ms": round(percentile(values, 0.95), 2)}
           for way, values in timings.items()},
        "mcp_added_p50_ms": round(added["mcp"], 2), "sdk_added_p50_ms": round(added["sdk"], 2),
    }
    print(f"search, k=10, hybrid, over {args.documents} documents; {args.rounds} rounds")
    for way, label in (("http", "HTTP API  GET /api/v1/search"),
                       ("mcp", "MCP       POST /mcp tools/call"),
                       ("sdk", "MCP SDK   Client.call_tool")):
        print(f"  {label:34s} p50 {figures[way]['p50_ms']:7.2f} ms   "
              f"p95 {figures[way]['p95_ms']:7.2f} ms")
    print(f"  added by MCP over HTTP, median of rounds    {figures['mcp_added_p50_ms']:7.2f} ms"
          f"   (goal <= 2 ms)")
    print(f"  added by the SDK client's call, the same    {figures['sdk_added_p50_ms']:7.2f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
