"""Benchmark the AI choke point: its overhead per call, and local embedding throughput.

Run with ``python bench/providers.py [--calls 2000] [--texts 512] [--rounds 3]``. It
starts the embedded PostgreSQL and Redis in
a scratch AISTACK_HOME (the same services ``aistack serve`` uses), so the usage
ledger and the circuit breaker pay their real costs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import bench_arguments, django_on_embedded_services


def _median_us(call: Callable[[], object], n: int) -> float:
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def bench_overhead(calls: int) -> None:
    """Print the choke point's median cost per call over a scripted model with no latency."""
    from django.test import override_settings

    from aistack.ai import chat_models, services
    from aistack.ai.types import ChatRequest, Message
    from aistack.usage.types import Attribution

    request = ChatRequest(messages=(Message(role="user", content="ping"),))
    attribution = Attribution(feature="bench")
    backend = chat_models["default"]

    def raw() -> object:
        return backend.complete(request, timeout=60)

    def through_service() -> object:
        return services.chat_complete(request=request, attribution=attribution)

    for call in (raw, through_service):  # warm connections and caches
        _median_us(call, 50)
    raw_us = _median_us(raw, calls)
    with override_settings(AI_RECORD_USAGE=False):
        unrecorded_us = _median_us(through_service, calls)
    recorded_us = _median_us(through_service, calls)

    print(f"choke point overhead per call (scripted:echo, 0 latency, {calls} calls)")
    print(f"  backend called directly         {raw_us:9.1f} µs median")
    print(f"  through services, no ledger     {unrecorded_us:9.1f} µs median "
          f"(+{unrecorded_us - raw_us:.1f} µs)")
    print(f"  through services, with ledger   {recorded_us:9.1f} µs median "
          f"(+{recorded_us - raw_us:.1f} µs)")


def _texts(count: int) -> list[str]:
    from aistack.documents import demo

    folder = Path(demo.__file__).parent / "demo_documents"
    sentences = [
        line.strip()
        for path in sorted(folder.glob("*.md"))
        for line in path.read_text().replace(". ", ".\n").splitlines()
        if len(line.split()) >= 5
    ]
    # Numbered so that no two texts are identical, as in a real corpus.
    return [f"{sentences[i % len(sentences)]} ({i})" for i in range(count)]


def bench_embeddings(count: int, rounds: int) -> None:
    """Print local embedding throughput through services against the model's runtime alone."""
    from aistack.ai import services
    from aistack.ai.backends.local import onnx_encoder
    from aistack.usage.types import Attribution

    texts = _texts(count)
    model = onnx_encoder()
    attribution = Attribution(feature="bench")

    def raw() -> object:
        return model.encode(texts)

    def through_service() -> object:
        return services.embeddings_create(texts=texts, attribution=attribution)

    raw(), through_service()  # warm up: first calls pay one-off allocations
    raw_s, ours_s = [], []
    for _ in range(rounds):  # interleaved, so drift in machine load hits both alike
        for timings, call in ((raw_s, raw), (ours_s, through_service)):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
    raw_rate = count / statistics.median(raw_s)
    ours_rate = count / statistics.median(ours_s)
    print(f"local embedding throughput ({count} texts, median of {rounds} rounds)")
    print(f"  ONNX Runtime directly           {raw_rate:9.1f} texts/s")
    print(f"  through services                {ours_rate:9.1f} texts/s")
    print(f"  ratio                           {ours_rate / raw_rate:9.3f}  (goal >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls timed for the overhead")
    parser.add_argument("--texts", type=int, default=512, help="texts embedded per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = bench_arguments(parser, calls=50, texts=32, rounds=1)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    release = django_on_embedded_services(
        home, AI_CHAT_MODEL="scripted:echo", AI_EMBEDDING_MODEL="local:all-MiniLM-L6-v2-int8"
    )
    try:
        bench_overhead(args.calls)
        bench_embeddings(args.texts, args.rounds)
    finally:
        release()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
