"""Drill: the primary model provider goes down (5xx, then timeouts), then comes back.

Run from the repository root: ``python -m bench.drills.provider_outage``. A local
HTTP server speaking the OpenAI chat completions protocol is the primary chat model
(``openai:gpt-4.1-mini`` at ``OPENAI_BASE_URL``), with ``scripted:echo`` as the
fallback. Clients call ``POST /api/v1/chat`` on a real ``aistack web`` throughout;
the drill switches the server to answering 500/503, then to hanging past the
timeout, then back to healthy. The invariants: every request is answered (200) by
the fallback within the retry budget, the circuit breaker opens (calls stop
reaching the provider), and it closes again once the provider is back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import percentile
from bench.drills.stack import Api, Findings, Sample, Stack, Traffic, describe

from harness import QuietHandler, WaitTimeout, loopback_server, wait_for

PRIMARY = "openai:gpt-4.1-mini"
FALLBACK = "scripted:echo"
CIRCUIT_OPEN_KEY = "ai:circuit:openai:open"


class FakeOpenAI:
    """A loopback server answering chat completions; ``mode`` switches it ok/error/timeout."""

    def __init__(self, *, hang_seconds: float) -> None:
        self.mode = "ok"
        self.hits: list[tuple[float, str]] = []
        provider = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                mode = provider.mode
                provider.hits.append((time.monotonic(), mode))
                if mode == "timeout":
                    time.sleep(hang_seconds)
                if mode == "error":
                    status = 503 if len(provider.hits) % 2 else 500
                    body: dict[str, Any] = {"error": {"message": "drill outage",
                                                      "type": "server_error"}}
                else:
                    status = 200
                    body = {"id": "chatcmpl-drill", "object": "chat.completion",
                            "created": int(time.time()), "model": "gpt-4.1-mini",
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                "role": "assistant", "content": "From the primary."}}],
                            "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                      "total_tokens": 12}}
                raw = json.dumps(body).encode()
                # The client gave up long ago on a hung request: nothing to tell it.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)

        self.server = loopback_server(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()

    def hits_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.hits if start <= at < end)


class CircuitWatch:
    """Poll the breaker's shared state in Redis; keep the times it opened and closed."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.core.cache import cache

        is_open = False
        while not self._stop.wait(0.05):
            now_open = cache.has_key(CIRCUIT_OPEN_KEY)
            if now_open != is_open:
                self.changes.append((time.monotonic(), now_open))
                is_open = now_open

    def __enter__(self) -> CircuitWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def first(self, *, opened: bool, after: float) -> float | None:
        return next((at for at, state in self.changes if state == opened and at >= after), None)


def served_by(samples: list[Sample], model: str) -> int:
    return sum(1 for s in samples if s.status == 200 and s.body.get("model") == model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--healthy", type=float, default=5, help="seconds before the outage")
    parser.add_argument("--outage", type=float, default=60,
                        help="seconds down: the first half 5xx, the second half timeouts")
    parser.add_argument("--timeout", type=float, default=2.0, help="AI_TIMEOUT_SECONDS")
    parser.add_argument("--attempts", type=int, default=2, help="AI_MAX_ATTEMPTS")
    parser.add_argument("--open-seconds", type=float, default=10, help="AI_CIRCUIT_OPEN_SECONDS")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    args = parser.parse_args()
    findings = Findings("provider_outage")
    backoff = 0.2
    provider = FakeOpenAI(hang_seconds=args.timeout * 3)
    with provider.running(), Stack(
        "provider", keep=args.keep, AI_CHAT_MODEL=PRIMARY, OPENAI_BASE_URL=provider.url,
        OPENAI_API_KEY="drill-key", AI_FALLBACK_CHAT_MODELS=FALLBACK,
        AI_SCRIPTED_LATENCY_SECONDS="0.05", AI_TIMEOUT_SECONDS=str(args.timeout),
        AI_MAX_ATTEMPTS=str(args.attempts), AI_RETRY_BACKOFF_SECONDS=str(backoff),
        AI_CIRCUIT_OPEN_SECONDS=str(args.open_seconds), AI_RATE_LIMIT="1000000/minute",
    ) as stack:
        _, token = stack.token()
        api = Api(stack.web(), token)
        findings.did(f"started aistack web: primary {PRIMARY} at {provider.url}, "
                     f"fallback {FALLBACK}, timeout {args.timeout}s x {args.attempts} attempts, "
                     f"circuit open {args.open_seconds}s after 5 failures")
        chat = [("chat", lambda: api.call("POST", "/api/v1/chat",
                                           {"prompt": "Where are the runbooks?"}, timeout=60))]
        with CircuitWatch() as circuit, Traffic(chat, threads=args.clients,
                                                pause=0.1) as traffic:
            time.sleep(args.healthy)
            down_at = time.monotonic()
            provider.mode = "error"
            findings.did("provider answers 500/503")
            time.sleep(args.outage / 2)
            provider.mode = "timeout"
            findings.did(f"provider hangs for {args.timeout * 3:.0f}s on every request")
            time.sleep(args.outage / 2)
            back_at = time.monotonic()
            provider.mode = "ok"
            findings.did(f"provider healthy again after {back_at - down_at:.0f}s")
            try:
                wait_for(lambda: any(s.at > back_at and s.body.get("model") == PRIMARY
                                     for s in traffic.between(back_at, time.monotonic())
                                     if s.status == 200),
                         timeout=args.open_seconds + 30, message="the primary to serve again")
            except WaitTimeout as exc:
                findings.did(str(exc))
            time.sleep(2)
            end = time.monotonic()

        healthy = traffic.between(0, down_at)
        # Requests sent while the provider was down, even if answered after it returned.
        outage = [s for s in traffic.between(down_at, end)
                  if down_at <= s.at - s.seconds < back_at]
        restored = [s for s in traffic.between(back_at, end) if s.at - s.seconds >= back_at]
        opened_at = circuit.first(opened=True, after=down_at)
        findings.found("healthy", describe(healthy), f"{served_by(healthy, PRIMARY)} by primary")
        findings.found("outage", describe(outage))
        findings.found("outage_requests", len(outage))
        findings.found("outage_served_by_fallback", served_by(outage, FALLBACK))
        budget = args.attempts * args.timeout + backoff * args.attempts + 1.0
        slowest = max((s.seconds for s in outage), default=0.0)
        findings.check("every request during the outage answered 200 by the fallback",
                       bool(outage) and served_by(outage, FALLBACK) == len(outage))
        findings.check(f"each within the retry budget ({budget:.1f}s: attempts x timeout + "
                       "backoff)", slowest <= budget, f"slowest {slowest:.2f}s")
        findings.check("the circuit opened during the outage", opened_at is not None)
        if opened_at is not None:
            findings.found("seconds_to_open", round(opened_at - down_at, 2))
            before = [s for s in outage if s.at < opened_at]
            after = [s for s in outage if s.at - s.seconds >= opened_at]
            findings.found("before the circuit opened", describe(before))
            findings.found("while the circuit was open", describe(after))
            p50 = percentile([s.seconds for s in after], 0.5) if after else 0.0
            findings.check("with the circuit open, requests skip the provider (p50 < 0.5 s)",
                           bool(after) and p50 < 0.5, f"p50 {p50 * 1000:.0f} ms")
        calls = provider.hits_between(down_at, back_at)
        findings.found("provider_calls_during_outage", calls,
                       f"{len(outage)} requests; the rest never reached it")
        closed_at = next((s.at for s in restored if s.body.get("model") == PRIMARY), None)
        findings.check("the circuit closed once the provider was back", closed_at is not None)
        if closed_at is not None:
            findings.found("seconds_to_close", round(closed_at - back_at, 2),
                           f"the circuit stays open {args.open_seconds}s after its last failure")
            late = [s for s in restored if s.at > closed_at + 1]
            findings.check("after it closed, the primary serves again",
                           bool(late) and served_by(late, PRIMARY) == len(late),
                           describe(late))
    return findings.finish()


if __name__ == "__main__":
    raise SystemExit(main())
