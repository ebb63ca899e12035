"""Drill: documents ingesting while workers are SIGKILLed again and again.

Run from the repository root: ``python -m bench.drills.worker_kills`` (500 documents,
20 kills). Documents are created in waves; after each wave the drill waits until a
worker holds a job, SIGKILLs that worker with its pool (as the OOM killer would) and
starts it again at once. The scheduler's reconciler hands the killed workers' jobs
on. The invariant: every document ends complete, its chunks are exactly a fresh
chunking of its text (ordinals unique, nothing duplicated or missing), every chunk
has one vector, and every job row ends complete.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter

from bench.drills.stack import Findings, Stack

from harness import WaitTimeout, wait_for

WORDS = (
    "deploy", "rollback", "review", "ticket", "freeze", "release", "standup", "incident", "pager",
    "alert", "database", "replica", "backup", "restore", "migration", "schema", "index", "vacuum",
    "cache", "redis", "worker", "queue", "lease", "retry", "backoff", "budget", "invoice",
    "contract", "vendor", "laptop", "badge", "onboarding", "holiday", "policy", "travel",
    "expense", "security", "audit", "firewall", "certificate",
)


def document_text(rng: random.Random) -> str:
    """Return a few paragraphs of varied length: one chunk for some, several for others."""
    paragraphs = []
    for _ in range(rng.randint(1, 8)):
        sentences = [" ".join(rng.choices(WORDS, k=rng.randint(6, 14))).capitalize() + "."
                     for _ in range(rng.randint(3, 8))]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def job_owners() -> Counter[int]:
    """Return how many jobs each process (by pid) is running right now."""
    from aistack.jobs.kinds import JobStatus
    from aistack.jobs.models import Job

    return Counter(int(owner.rsplit(":", 1)[1]) for owner in Job.objects.filter(
        status=JobStatus.PROCESSING).exclude(owner="").values_list("owner", flat=True))


def busy_worker(stack: Stack, slots: list[str]) -> tuple[str, int] | None:
    """Return a worker holding jobs right now and how many, or None."""
    owners = job_owners()
    for slot in slots:
        held = sum(owners[pid] for pid in stack.tree(slot))
        if held:
            return slot, held
    return None


def jobs_settled(documents: int | None = None) -> bool:
    """Return whether no job is pending or running, and each of the ``documents`` (all
    there are if None) has its two jobs, an index and a summary."""
    from aistack.documents.models import Document
    from aistack.jobs.kinds import JobStatus
    from aistack.jobs.models import Job

    open_jobs = Job.objects.filter(status__in=[JobStatus.PENDING, JobStatus.PROCESSING]).count()
    expected = Document.objects.count() if documents is None else documents
    return open_jobs == 0 and Job.objects.count() == 2 * expected


def wait_settled(findings: Findings, *, timeout: float, documents: int | None = None) -> None:
    """Wait until :func:`jobs_settled`; say so if it does not come within ``timeout``."""
    try:
        wait_for(lambda: jobs_settled(documents), timeout=timeout, interval=0.5,
                 message="every job to end")
    except WaitTimeout as exc:
        findings.did(str(exc))


def verify(findings: Findings, *, documents: int) -> None:
    """Check every document, chunk, vector and job against the invariant."""
    from django.db import connection
    from django.db.models import Count

    from aistack.documents.models import Document
    from aistack.jobs.kinds import JobStatus
    from aistack.jobs.models import Job
    from aistack.retrieval.chunking import chunk_text
    from aistack.retrieval.models import Chunk, ChunkVector

    statuses = Counter(Document.objects.values_list("embedding_status", "summary_status"))
    complete = statuses[(JobStatus.COMPLETE, JobStatus.COMPLETE)]
    findings.found("documents_complete", complete, f"of {documents}; all: {dict(statuses)}")
    findings.check("every document ends complete", complete == documents)

    jobs = Counter(Job.objects.values_list("status", flat=True))
    findings.found("jobs_complete", jobs[JobStatus.COMPLETE], f"all: {dict(jobs)}")
    kinds = Counter(Job.objects.values_list("kind", flat=True))
    findings.check("no lost job: an index and a summary job per document, each complete",
                   set(kinds.values()) == {documents} and len(kinds) == 2
                   and jobs[JobStatus.COMPLETE] == 2 * documents, f"{dict(kinds)}")
    attempts = Counter(Job.objects.values_list("attempts", flat=True))
    findings.found("job_attempts", dict(sorted(attempts.items())), "attempts: jobs")
    findings.found("jobs_run_again", sum(n for a, n in attempts.items() if a > 1),
                   "jobs a killed worker had taken, finished by another")

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT document_id, ordinal FROM retrieval_chunk "
                       "GROUP BY document_id, ordinal HAVING count(*) > 1) d")
        duplicates = cursor.fetchone()[0]
    findings.found("duplicate_chunk_ordinals", duplicates)
    mismatched = []
    stored: dict[int, list[tuple[int, str]]] = {}
    for document_id, ordinal, text in Chunk.objects.values_list("document_id", "ordinal", "text"):
        stored.setdefault(document_id, []).append((ordinal, text))
    chunks_expected = 0
    for document in Document.objects.only("pk", "content"):
        expected = [(spec.ordinal, spec.text) for spec in chunk_text(document.content)]
        chunks_expected += len(expected)
        if sorted(stored.get(document.pk, [])) != expected:
            mismatched.append(document.pk)
    chunks = Chunk.objects.count()
    findings.found("chunks", chunks, f"a fresh chunking gives {chunks_expected}")
    findings.found("documents_with_wrong_chunks", len(mismatched), f"ids {mismatched[:10]}")
    findings.check("no duplicate chunks: each document's chunks match a fresh chunking",
                   duplicates == 0 and not mismatched and chunks == chunks_expected)
    vectors = Counter(ChunkVector.objects.values("chunk_id").annotate(n=Count("id"))
                      .values_list("n", flat=True))
    findings.found("vectors_per_chunk", dict(vectors))
    findings.check("every chunk has exactly one vector", set(vectors) == {1}
                   and vectors[1] == chunks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size of each")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the end")
    parser.add_argument("--embedding-model", default="local:all-MiniLM-L6-v2-int8",
                        help="scripted:hash spares each restarted worker loading the model")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    args = parser.parse_args()
    findings = Findings("worker_kills")
    rng = random.Random(args.seed)
    with Stack("kills", keep=args.keep, AI_CHAT_MODEL="scripted:echo",
               AI_EMBEDDING_MODEL=args.embedding_model,
               # A summary takes a moment, so kills also land in the middle of summaries.
               AI_SCRIPTED_LATENCY_SECONDS="0.3",
               JOB_LEASE_SECONDS="5", JOB_PENDING_TIMEOUT_SECONDS="10",
               RECONCILE_INTERVAL_SECONDS="1", JOB_RETRY_BACKOFF_SECONDS="0.2") as stack:
        from aistack.documents.services import document_create

        user, _ = stack.token()
        slots = [f"worker-{n}" for n in range(1, args.workers + 1)]
        for slot in slots:
            stack.start(slot, "worker", "--concurrency", str(args.concurrency))
        stack.start("scheduler", "scheduler")
        findings.did(f"started {args.workers} workers (pool of {args.concurrency} each) "
                     "and the scheduler")

        per_wave = math.ceil(args.documents / max(args.kills, 1))
        created = 0
        kills: list[int] = []
        started = time.monotonic()
        for wave in range(args.kills):
            batch = min(per_wave, args.documents - created)
            for _ in range(batch):
                created += 1
                document_create(workspace=user.personal_workspace, title=f"Note {created}",
                                content=document_text(rng), author=user)
            try:
                slot, held = wait_for(lambda: busy_worker(stack, slots), timeout=120,
                                      interval=0.05, message="a worker to take a job")
            except WaitTimeout:
                findings.did(f"wave {wave + 1}: no worker took a job in 120 s; no kill")
                continue
            time.sleep(rng.uniform(0, 0.3))
            stack.kill(slot)
            stack.start(slot, "worker", "--concurrency", str(args.concurrency))
            kills.append(held)
            findings.did(f"kill {len(kills)}: SIGKILL {slot} holding {held} job(s), restarted it "
                         f"({created} documents created so far)")
        for _ in range(args.documents - created):
            created += 1
            document_create(workspace=user.personal_workspace, title=f"Note {created}",
                            content=document_text(rng), author=user)
        last_kill = time.monotonic()
        findings.found("kills", len(kills), f"jobs held at each: {kills}")

        wait_settled(findings, timeout=args.timeout, documents=args.documents)
        findings.found("seconds_total", round(time.monotonic() - started, 1),
                       f"{args.documents} documents ingested through {len(kills)} kills")
        findings.found("seconds_after_last_kill", round(time.monotonic() - last_kill, 1))
        verify(findings, documents=args.documents)
        findings.check("every planned kill hit a worker holding a job", len(kills) == args.kills)
    return findings.finish()


if __name__ == "__main__":
    raise SystemExit(main())
