"""Benchmark event streams: many open streams on one web process, and the fan-out of an event.

Run with ``python bench/events.py [--streams 2000] [--rounds 30]``. It starts the
embedded PostgreSQL and Redis in a scratch home and one ``aistack web`` process (one
worker), opens ``--streams`` event streams to it from 100 members of one workspace,
then publishes job status changes as a worker does once a job commits, and measures:

- the Redis connections the web process holds for events (goal: <= 2);
- the web process's memory added per open stream (goal: <= 50 KB);
- p99, over the rounds, of the time from the commit to the last stream receiving the
  event (goal: <= 250 ms). The client reading every stream is one Python process,
  so its own delay is part of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The drills' stack and what tests and benches share live at the repository's root (the
# bench package, harness); run as a script, add it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_arguments, median, percentile
from bench.drills.stack import Stack

from harness import free_port, process_tree

MEMBERS = 100
CONNECT_BATCH = 100
WARM_STREAMS = 20


@dataclass
class _Stream:
    """One open event stream and when it saw each round's event."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    seen: dict[int, float] = field(default_factory=dict)


async def _open(port: int, token: str) -> _Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while await reader.readline() not in (b"\r\n", b""):
        pass  # headers
    return _Stream(reader, writer)


async def _follow(stream: _Stream, marker: int) -> None:
    """Record when each round's event (object_id == marker, error == round) arrives."""
    while line := await stream.reader.readline():
        if line.startswith(b"data:") and b'"job"' not in line:
            try:
                data = json.loads(line[5:])
            except ValueError:
                continue  # a chunk boundary: this bench sends small events only
            if isinstance(data, dict) and data.get("object_id") == marker:
                stream.seen[int(data["error"])] = time.perf_counter()


def _redis_event_connections(client: Any) -> int:
    """Return the Redis clients holding a (pattern) subscription: the event relays."""
    return sum(1 for c in client.client_list() if int(c["sub"]) + int(c["psub"]) > 0)


async def _bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from django.db import transaction

    from aistack.accounts.models import Membership, Role, Workspace
    from aistack.accounts.services import api_token_create, user_create
    from aistack.documents.models import Document
    from aistack.documents.summaries import DOCUMENT_SUMMARY
    from aistack.jobs.kinds import JobStatus
    from aistack.realtime.events import job_events_publish
    from aistack.redis.connections import redis_client

    def setup() -> tuple[list[str], int]:
        team = Workspace.objects.create(name="Team", slug="team")
        tokens = []
        for n in range(MEMBERS):
            user = user_create(username=f"member{n}", password=f"bench-password-{n}-x")
            Membership.objects.create(workspace=team, user=user, role=Role.VIEWER)
            tokens.append(api_token_create(user=user)[1])
        document = Document.objects.create(workspace=team, title="Runbook", content="Text.",
                                           content_hash="")
        return tokens, document.pk

    tokens, marker = await sync_to_async(setup)()
    port = free_port()
    process = stack.start("web", "web", "--port", str(port), "--workers", "1")
    await sync_to_async(stack._answering)("web", process, port)
    # The web process and any it started (none with one worker): each counted once.
    processes = process_tree(process.pid)
    rss = lambda: sum(p.memory_info().rss for p in processes)  # noqa: E731
    redis = redis_client()
    # Warm up: the first streams load code and fill pools that later ones share.
    warm = await asyncio.gather(*(_open(port, token) for token in tokens[:WARM_STREAMS]))
    await asyncio.sleep(1)
    for stream in warm:
        stream.writer.close()
    await asyncio.sleep(1)
    before_rss = rss()

    streams: list[_Stream] = []
    for start in range(0, args.streams, CONNECT_BATCH):
        end = min(args.streams, start + CONNECT_BATCH)
        batch = [tokens[n % MEMBERS] for n in range(start, end)]
        streams += await asyncio.gather(*(_open(port, token) for token in batch))
    readers = [asyncio.create_task(_follow(s, marker)) for s in streams]
    await asyncio.sleep(2)  # let each stream send its snapshot and settle
    added_kb = (rss() - before_rss) / len(streams) / 1024
    subs = _redis_event_connections(redis)  # this process holds none

    def commit_and_publish(n: int) -> float:
        # What a worker does: the status change commits, then the event is published.
        with transaction.atomic():
            Document.objects.filter(pk=marker).update(summary_status=JobStatus.PROCESSING)
        committed = time.perf_counter()
        job_events_publish(kinds=[DOCUMENT_SUMMARY], object_ids=[marker],
                           status=JobStatus.PROCESSING, error=str(n))
        return committed

    to_last = []
    for n in range(args.rounds):
        committed = await sync_to_async(commit_and_publish)(n)
        deadline = time.perf_counter() + 10
        while (sum(n in s.seen for s in streams) < len(streams)
               and time.perf_counter() < deadline):
            await asyncio.sleep(0.005)
        arrived = [s.seen[n] for s in streams if n in s.seen]
        if len(arrived) < len(streams):
            raise RuntimeError(f"round {n}: {len(streams) - len(arrived)} streams missed it")
        to_last.append((max(arrived) - committed) * 1000)
        await asyncio.sleep(0.2)
    for reader in readers:
        reader.cancel()
    for stream in streams:
        stream.writer.close()
    return {"streams": len(streams), "redis_connections_for_events": subs,
            "added_kb_per_stream": round(added_kb, 1),
            "commit_to_last_stream_p50_ms": round(median(to_last), 1),
            "commit_to_last_stream_p99_ms": round(percentile(to_last, 0.99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = bench_arguments(parser, streams=50, rounds=3)
    with Stack("events") as stack:
        figures = asyncio.run(_bench(args, stack))
    print(f"{figures['streams']} open event streams on one web process")
    print(f"  Redis connections holding event subscriptions  "
          f"{figures['redis_connections_for_events']:6d}      (goal <= 2)")
    print(f"  memory added per open stream                   "
          f"{figures['added_kb_per_stream']:6.1f} KB   (goal <= 50 KB)")
    print(f"  commit to the last stream receiving the event  "
          f"p50 {figures['commit_to_last_stream_p50_ms']:6.1f} ms   "
          f"p99 {figures['commit_to_last_stream_p99_ms']:6.1f} ms   (goal: p99 <= 250 ms)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
