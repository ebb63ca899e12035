"""Drill: PostgreSQL restarts under traffic; nothing else restarts.

Run from the repository root: ``python -m bench.drills.postgres_restart``. With
``aistack serve`` running (web, worker and scheduler) on the drill's own PostgreSQL
and Redis, clients read and write through the API while documents are still in
their jobs; the drill stops PostgreSQL (fast shutdown, as an orchestrator restarting
it does), keeps it down, and starts it again. The invariants: while it is down the
API answers 503 with a JSON error, never 500; afterwards the same web and worker
processes (no restart) serve requests and finish every job queued meanwhile.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from bench.drills.redis_outage import CONTENT, documents_done, documents_warm, outage_stack
from bench.drills.stack import Api, Findings, Sample, Traffic, describe

from harness import WaitTimeout, wait_for


def database_bound(samples: list[Sample], down_at: float, up_at: float) -> set[str]:
    """Return the requests that needed the database: those answered 503 while it was down.

    A cached summary is answered from Redis whether the pool is back or not, so it says
    nothing about the database.
    """
    return {s.name for s in list(samples) if down_at <= s.at - s.seconds < up_at
            and s.status == 503}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=float, default=15, help="seconds PostgreSQL stays down")
    parser.add_argument("--pending", type=int, default=20,
                        help="documents created just before the stop, their work in flight")
    parser.add_argument("--embedding-model", default="local:all-MiniLM-L6-v2-int8")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    args = parser.parse_args()
    findings = Findings("postgres_restart")
    with outage_stack("postgres", keep=args.keep,
                      embedding_model=args.embedding_model) as stack:
        from django.db import close_old_connections

        from aistack.jobs.models import Job

        _, token = stack.token()
        api = Api(stack.serve(), token)
        before = stack.roles()
        findings.did(f"started aistack serve: {before}")
        warm = documents_warm(api, 5)
        findings.did(f"created {len(warm)} documents and waited for their jobs")

        created: list[int] = []

        def create() -> object:
            answer = api.call("POST", "/api/v1/documents",
                              {"title": "Written around the restart", "content": "Kept."})
            if answer.status == 201:
                created.append(answer.body["id"])
            return answer

        requests = [
            ("document", lambda: api.call("GET", f"/api/v1/documents/{warm[0]}")),
            ("list", lambda: api.call("GET", "/api/v1/documents")),
            ("summary", lambda: api.call("GET", f"/api/v1/documents/{warm[1]}/summary")),
            ("search", lambda: api.call("GET", "/api/v1/search?q=rollbacks+reviewer")),
            ("create", create),
        ]
        with Traffic(requests, threads=4) as traffic:
            pending = [api.call("POST", "/api/v1/documents",
                                {"title": f"Pending {n}", "content": CONTENT.format(n=n)}
                                ).body["id"] for n in range(args.pending)]
            down_at = time.monotonic()
            stack.postgres_stop()
            findings.did(f"created {len(pending)} more documents, then stopped PostgreSQL")
            time.sleep(args.down)
            stack.postgres_start()
            up_at = time.monotonic()
            findings.did(f"kept PostgreSQL down {up_at - down_at:.1f}s, then started it again")
            # Traffic goes on until a request that needs the database has got through,
            # and for a while after it: those later requests must all succeed.
            try:
                wait_for(lambda: any(s.status in (200, 201) and s.at - s.seconds >= up_at
                                     and s.name in database_bound(traffic.samples, down_at, up_at)
                                     for s in list(traffic.samples)),
                         timeout=60, interval=0.2, message="a request to succeed after the restart")
            except WaitTimeout as exc:
                findings.did(str(exc))  # judged below: no request succeeded
            time.sleep(3)
        close_old_connections()
        expected = len(warm) + len(pending) + len(created)
        try:
            wait_for(lambda: documents_done(expected), timeout=180, interval=0.5,
                     message="every document to complete")
        except WaitTimeout as exc:
            findings.did(str(exc))
        done_at = time.monotonic()

        # Requests sent while it was stopping or down, and those sent once it was back.
        during = [s for s in traffic.samples if down_at <= s.at - s.seconds < up_at]
        after = [s for s in traffic.samples if s.at - s.seconds >= up_at]
        for name, _ in requests:
            findings.found(f"while down: {name}", describe([s for s in during if s.name == name]))
        statuses = Counter(s.status for s in during)
        findings.check("while it is down the API answers 503 (or 200 from what it holds), "
                       "never 500", bool(during) and set(statuses) <= {200, 201, 503},
                       f"{dict(statuses)}")
        errors = Counter(s.body.get("error", {}).get("code") for s in during if s.status == 503)
        findings.check("the 503s are JSON errors with code 'unavailable'",
                       set(errors) <= {"unavailable"}, f"{dict(errors)}")
        slowest = max((s.seconds for s in during), default=0.0)
        findings.found("slowest_answer_while_down_seconds", round(slowest, 2),
                       "a request waits for a database connection at most 5 s")
        bound = database_bound(traffic.samples, down_at, up_at)
        first_ok = min((s.at for s in after if s.status in (200, 201) and s.name in bound),
                       default=None)
        if first_ok is not None:
            findings.found("seconds_to_first_success_after_restart", round(first_ok - up_at, 2))
        # The pool's retries stop after 5 s, and a request's own attempt then connects: the
        # retry delay, doubling since the outage began, must not keep requests failing.
        findings.check("a request that needs the database succeeds within 5 s of the restart",
                       first_ok is not None and first_ok - up_at < 5)
        # Once one request got through, the pool is back: every request sent after that
        # must succeed. (Requests sent earlier may still have waited for a connection and
        # got a 503 after the 5 s connection timeout.)
        settled = [s for s in after if first_ok is not None and s.at - s.seconds >= first_ok]
        findings.check("requests succeed once it is back", bool(settled) and all(
            s.status in (200, 201) for s in settled), describe(settled))
        after_roles = stack.roles()
        restarted = sorted(role for role, pid in after_roles.items() if before.get(role) != pid)
        findings.found("processes_restarted", restarted,
                       f"pids before {before}, after {after_roles}")
        findings.check("web, worker and scheduler reconnected without a restart",
                       not restarted and set(after_roles) == set(before))
        findings.found("documents", expected,
                       f"{len(warm)} before, {len(pending)} in flight at the stop, "
                       f"{len(created)} created by the clients around the restart")
        findings.found("jobs", dict(Counter(Job.objects.values_list("status", flat=True))))
        findings.found("seconds_to_complete_after_restart", round(done_at - up_at, 1))
        findings.check("work queued meanwhile completes: every job complete",
                       documents_done(expected))
    return findings.finish()


if __name__ == "__main__":
    raise SystemExit(main())
