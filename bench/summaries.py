"""Benchmark summaries: warm vs cold reads, single flight vs a naive cache, create latency.

Run with ``python bench/summaries.py [--warm-reads 2000] [--creates 200]``. It starts
the embedded PostgreSQL and Redis in a scratch AISTACK_HOME (the services ``aistack serve``
uses) and stands in for a model with ``scripted:echo`` at a fixed latency, so every figure
but the model's is real.
Reads and creates go through the whole Django request path (routing, token auth,
permission checks, the handler) in this process: server-side times, no network.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import bench_arguments, django_on_embedded_services, percentile

COLD_LATENCY_SECONDS = 1.5
CREATE_LATENCY_SECONDS = 2.0
CONTENT = ("Deploys happen on Tuesdays after the standup. Rollbacks need a second reviewer "
           "and a ticket. Change freezes start on the first of December. ")


@contextmanager
def _model_latency(seconds: float) -> Iterator[None]:
    from django.conf import settings
    from django.test import override_settings

    entry = {**settings.AI_CHAT_MODELS["default"], "OPTIONS": {"LATENCY_SECONDS": seconds}}
    with override_settings(AI_CHAT_MODELS={"default": entry}):
        yield


def _replies(count: int) -> None:
    from aistack.ai.backends import scripted

    scripted.reset()
    scripted.script("echo", *(scripted.Reply(text="A summary.") for _ in range(count)))


def _model_calls() -> int:
    from aistack.ai.backends import scripted

    return len(scripted.calls())


def _timed(call: Callable[[], object], n: int) -> list[float]:
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


class _ServerClock:
    """Time each request from Django's request_started to request_finished signal.

    That is the server's whole share of a request: every middleware, routing, token
    authentication, the permission check, the handler and the response's rendering;
    not the test client building the request and parsing the response.
    """

    def __init__(self) -> None:
        from django.core.signals import request_finished, request_started

        self.timings: list[float] = []
        self._started = 0.0
        request_started.connect(self._start, weak=False)
        request_finished.connect(self._finish, weak=False)

    def _start(self, **_: Any) -> None:
        self._started = time.perf_counter()

    def _finish(self, **_: Any) -> None:
        self.timings.append(time.perf_counter() - self._started)


class _Api:
    """Requests through Django's whole handler in this process, with a bearer token."""

    def __init__(self, token: str) -> None:
        from django.test import Client

        self.client = Client(headers={"Authorization": f"Bearer {token}"}, SERVER_NAME="localhost")
        self.server = _ServerClock()

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        assert response.status_code == 200, response.content
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, body, content_type="application/json")
        assert response.status_code == 201, response.content
        return response.json()


def _cold_document(workspace: Any) -> Any:
    """Return a document no summary was made for (and no job will make one)."""
    from aistack.documents.models import Document

    return Document.objects.create(workspace=workspace, title="Runbook",
                                   content=f"{CONTENT} ({time.time_ns()})")


def bench_reads(api: _Api, workspace: Any, *, warm_reads: int, cold_reads: int) -> None:
    """Print warm-cache read latency against cold reads that wait on the model."""
    from aistack.documents.selectors import document_ref_get
    from aistack.documents.summaries import summary_cached, summary_read

    user = workspace.personal_for
    with _model_latency(COLD_LATENCY_SECONDS):
        _replies(cold_reads + 1)
        cold = []
        for _ in range(cold_reads):
            document = _cold_document(workspace)
            cold += _timed(lambda d=document: api.get(f"/api/v1/documents/{d.pk}/summary"), 1)
        document = _cold_document(workspace)
        path = f"/api/v1/documents/{document.pk}/summary"
        api.get(path)  # the one model call; the rest are cache hits
        assert api.get(path)["status"] == "complete"
        _timed(lambda: api.get(path), 200)  # warm connections
        api.server.timings.clear()
        warm = _timed(lambda: api.get(path), warm_reads)
        server = list(api.server.timings)
        handler = _timed(lambda: summary_cached(
            ref=document_ref_get(user=user, document_id=document.pk)), warm_reads)
        lookup = _timed(lambda: summary_read(document=document), warm_reads)

    cold_p50 = statistics.median(cold)
    print(f"summary reads, model at {COLD_LATENCY_SECONDS} s (server-side, in this process)")
    for label, timings in (("warm, test client call (client + server)", warm),
                           ("warm, server side of the request", server),
                           ("warm, handler (authorized version + read)", handler),
                           ("warm, summary_read() alone", lookup)):
        p50 = statistics.median(timings)
        print(f"  {label:40s} p50 {p50 * 1e3:8.3f} ms   "
              f"p95 {percentile(timings, 0.95) * 1e3:8.3f} ms   cold/warm {cold_p50 / p50:6.0f}x")
    print(f"  {'cold, test client call':40s} p50 {cold_p50 * 1e3:8.1f} ms   "
          f"p95 {percentile(cold, 0.95) * 1e3:8.1f} ms")
    print("  (goals: warm p50 <= 2 ms server-side; cold/warm >= 500x)")


def _naive_read(document: Any) -> None:
    """A read-through cache without single flight: every miss calls the model."""
    from django.conf import settings
    from django.core.cache import cache

    from aistack.ai import services as ai
    from aistack.ai.types import ChatRequest
    from aistack.documents.summaries import SUMMARY_PROMPT, summary_version
    from aistack.usage.types import Attribution

    key = "naive:" + summary_version(document=document).cache_key
    if cache.get(key) is None:
        result = ai.chat_complete(
            request=ChatRequest(messages=SUMMARY_PROMPT.render(content=document.content),
                                context=(document.content,)),
            attribution=Attribution(feature="summary", object_id=document.pk),
        )
        cache.set(key, result.text, timeout=settings.SUMMARY_CACHE_SECONDS)


def _concurrently(read: Callable[[], object], n: int) -> float:
    from django.db import connection

    barrier = threading.Barrier(n)

    def run() -> None:
        barrier.wait()
        try:
            read()
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def bench_single_flight(workspace: Any, *, concurrent_reads: int) -> None:
    """Print the model calls that concurrent reads of one cold key cause, with and without."""
    from django.test import override_settings

    from aistack.documents.summaries import summary_read

    print(f"{concurrent_reads} concurrent reads of one cold key, model at "
          f"{COLD_LATENCY_SECONDS} s (usage ledger off: it would need a connection each)")
    with _model_latency(COLD_LATENCY_SECONDS), override_settings(AI_RECORD_USAGE=False):
        for label, read in (("naive read-through cache", _naive_read),
                            ("single flight (aistack)", lambda d: summary_read(document=d))):
            document = _cold_document(workspace)
            _replies(concurrent_reads)
            took = _concurrently(lambda r=read, d=document: r(d), concurrent_reads)
            print(f"  {label:28s}  {_model_calls():4d} model call(s)   all done in {took:5.2f} s"
                  + ("   (goal: 1)" if "single" in label else ""))


def bench_create(api: _Api, *, creates: int) -> None:
    """Print how long creating a document takes while its summary's model call is slow."""
    with _model_latency(CREATE_LATENCY_SECONDS):
        _timed(lambda: api.post("/api/v1/documents", {"title": "Warm-up", "content": CONTENT}),
               20)
        timings = _timed(
            lambda: api.post("/api/v1/documents", {"title": "Runbook", "content": CONTENT}),
            creates,
        )
    print(f"create requests (POST /api/v1/documents), model at {CREATE_LATENCY_SECONDS} s, "
          f"{creates} requests")
    print(f"  p50 {statistics.median(timings) * 1e3:8.2f} ms   "
          f"p95 {percentile(timings, 0.95) * 1e3:8.2f} ms   (goal: p50 <= 15 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm-reads", type=int, default=2000)
    parser.add_argument("--cold-reads", type=int, default=5)
    parser.add_argument("--concurrent-reads", type=int, default=100)
    parser.add_argument("--creates", type=int, default=200)
    args = bench_arguments(parser, warm_reads=50, cold_reads=2, concurrent_reads=10, creates=10)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    # The creates stand for many users: the per-user write limit is lifted.
    release = django_on_embedded_services(home, AI_CHAT_MODEL="scripted:echo",
                                          WRITE_RATE_LIMIT="1000000/minute")
    try:
        from aistack.accounts.services import api_token_create, user_create

        user = user_create(username="bench", password=secrets.token_urlsafe())
        _, token = api_token_create(user=user)
        api = _Api(token)
        workspace = user.personal_workspace
        bench_reads(api, workspace, warm_reads=args.warm_reads, cold_reads=args.cold_reads)
        bench_single_flight(workspace, concurrent_reads=args.concurrent_reads)
        bench_create(api, creates=args.creates)
    finally:
        release()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
