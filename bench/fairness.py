"""Benchmark fair scheduling: one workspace floods the queue, another adds a page.

Run with ``python bench/fairness.py [--flood 1000] [--words 2000] [--probes 7]``. It
starts the embedded PostgreSQL and Redis in a scratch AISTACK_HOME and a real
``aistack worker``, with the default local models. A one-page document in a quiet
workspace is timed from its creation until its index job has committed: first with
the worker idle, then while another workspace has ``--flood`` documents of
``--words`` words queued. Documents are created through the same service the API
calls. The goal: flooded, the page is indexed within 2x its idle time. For
comparison, the run reckons how long the flood takes to drain from its pace over a
minute (``--drain`` waits for all of it): what the page would wait behind it, first
in, first out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The drills' stack and what tests and benches share live at the repository's root (the
# bench package, harness); run as a script, add it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_arguments, median
from bench.drills.stack import Stack

from harness import wait_for

WORDS = (
    "deploy", "rollback", "review", "ticket", "freeze", "release", "standup", "incident",
    "pager", "alert", "database", "replica", "backup", "restore", "migration", "schema",
    "index", "vacuum", "cache", "worker", "queue", "lease", "retry", "budget", "invoice",
    "contract", "vendor", "laptop", "badge", "onboarding", "holiday", "policy", "travel",
)
PAGE = ("Expenses over 500 dollars need a manager's approval before the purchase. Submit "
        "receipts within 30 days; travel is booked through the portal.")


def long_text(rng: random.Random, words: int) -> str:
    """Return about ``words`` words in paragraphs of sentences."""
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(" ".join(rng.choices(WORDS, k=rng.randint(8, 16))).capitalize() + ".")
    return "\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6))


@dataclass(frozen=True, kw_only=True)
class Probe:
    """A page's time from creation until indexed: waiting for a process, then its run."""

    seconds: float
    queued: float
    ran: float

    def __str__(self) -> str:
        return (f"{self.seconds * 1000:.0f} ms (waited {self.queued * 1000:.0f} ms for a "
                f"process, ran {self.ran * 1000:.0f} ms)")


def page_indexed(workspace: Any, author: Any, title: str) -> Probe:
    """Create a one-page document; time it until its index job committed."""
    from aistack.documents.indexing import DOCUMENT_INDEX
    from aistack.documents.models import Document
    from aistack.documents.services import document_create
    from aistack.jobs.kinds import JobStatus
    from aistack.jobs.selectors import job_run_times

    started = time.perf_counter()
    document = document_create(workspace=workspace, title=title, content=PAGE, author=author)
    status = Document.objects.filter(pk=document.pk).values_list("embedding_status", flat=True)
    wait_for(lambda: status.first() == JobStatus.COMPLETE, timeout=600, interval=0.005,
             message=f"{title} to be indexed")
    took = time.perf_counter() - started
    started_at, finished_at = job_run_times(kind=DOCUMENT_INDEX, object_id=document.pk)
    assert started_at is not None and finished_at is not None
    return Probe(seconds=took, queued=(started_at - document.created_at).total_seconds(),
                 ran=(finished_at - started_at).total_seconds())


def open_jobs(workspace: Any) -> int:
    """Return the jobs of ``workspace`` not yet done."""
    from aistack.jobs.selectors import jobs_open_counts

    return jobs_open_counts(workspace_ids=[workspace.pk]).get(workspace.pk, 0)


def quiet_settled(workspace: Any) -> None:
    """Wait until the quiet workspace's earlier page is summarized too: each page is timed
    alone, idle and flooded alike."""
    wait_for(lambda: open_jobs(workspace) == 0, timeout=600, interval=0.05,
             message="the quiet workspace's jobs to end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=1000, help="documents the flood queues")
    parser.add_argument("--words", type=int, default=2000, help="words per flood document")
    parser.add_argument("--probes", type=int, default=7, help="pages timed idle and flooded")
    parser.add_argument("--probe-every", type=float, default=5.0,
                        help="seconds between the flooded pages")
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's pool size")
    parser.add_argument("--drain", action="store_true",
                        help="wait for the whole flood (tens of minutes at full size) rather "
                             "than reckon its drain from its pace")
    parser.add_argument("--pace-seconds", type=float, default=60.0,
                        help="how long to watch the flood's pace")
    parser.add_argument("--embedding-model", default="local:all-MiniLM-L6-v2-int8")
    args = bench_arguments(parser, flood=40, words=200, probes=2, probe_every=0.5,
                           pace_seconds=2.0, embedding_model="scripted:hash")
    rng = random.Random(5)
    with Stack("fairness", AI_EMBEDDING_MODEL=args.embedding_model) as stack:
        quiet_user, _ = stack.token("quiet")
        flood_user, _ = stack.token("flood")
        quiet, flooding = quiet_user.personal_workspace, flood_user.personal_workspace
        stack.start("worker", "worker", "--concurrency", str(args.concurrency))
        # Each pool process loads the models on its first jobs: not what is measured.
        for n in range(2 * args.concurrency + 1):
            page_indexed(quiet, quiet_user, f"Warm-up {n}")
        idle = []
        for n in range(args.probes):
            quiet_settled(quiet)
            idle.append(page_indexed(quiet, quiet_user, f"Idle {n}"))
            print(f"  idle page {n + 1}: {idle[-1]}", flush=True)
        idle_median = median([probe.seconds for probe in idle])
        print(f"idle worker: a page is indexed in {idle_median * 1000:.0f} ms (median of "
              f"{args.probes})", flush=True)

        from aistack.documents.services import document_create

        texts = [long_text(rng, args.words) for _ in range(args.flood)]
        started = time.perf_counter()
        for n, text in enumerate(texts):
            document_create(workspace=flooding, title=f"Flood {n}", content=text,
                            author=flood_user)
        created = time.perf_counter()
        print(f"flood: {args.flood} documents of {args.words} words created in "
              f"{created - started:.1f} s", flush=True)

        flooded, backlogs = [], []
        for n in range(args.probes):
            quiet_settled(quiet)
            time.sleep(max(0.0, created + n * args.probe_every - time.perf_counter()))
            backlogs.append(open_jobs(flooding))
            flooded.append(page_indexed(quiet, quiet_user, f"Flooded {n}"))
            print(f"  flooded page {n + 1}, {time.perf_counter() - created:.0f} s in, "
                  f"{backlogs[-1]} of the flood's jobs open: {flooded[-1]}", flush=True)
        flooded_median = median([probe.seconds for probe in flooded])
        if args.drain:
            wait_for(lambda: open_jobs(flooding) == 0, timeout=7200, interval=0.5,
                     message="the flood to drain")
            drained = time.perf_counter() - created
            how = "measured"
        else:
            # The flood's pace over a while, and what is left of it: what a page sent at
            # its start would wait behind it, first in, first out.
            done_before = 2 * args.flood - open_jobs(flooding)
            time.sleep(args.pace_seconds)
            pace = (2 * args.flood - open_jobs(flooding) - done_before) / args.pace_seconds
            drained = 2 * args.flood / pace if pace else float("inf")
            how = f"at the flood's pace of {pace:.2f} jobs/s over {args.pace_seconds:.0f} s"
        ratio = flooded_median / idle_median
        print(f"flooded: a page is indexed in {flooded_median * 1000:.0f} ms (median), "
              f"{ratio:.2f}x idle (goal: at most 2x)", flush=True)
        print(f"first in, first out it would wait for the flood to drain: {drained:.1f} s, "
              f"{how} ({drained / idle_median:.0f}x idle)", flush=True)
        print(json.dumps({
            "idle_ms": round(idle_median * 1000, 1),
            "flooded_ms": round(flooded_median * 1000, 1),
            "ratio": round(ratio, 2),
            "flooded_waits_ms": [round(probe.queued * 1000) for probe in flooded],
            "flood_backlog_at_probes": backlogs,
            "flood_drain_s": round(drained, 1), "flood_drain_measured": args.drain,
            "flood": args.flood, "words": args.words, "concurrency": args.concurrency,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
