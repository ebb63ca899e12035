"""Drill: aistack on a cluster of one machine's "hosts", through a worker loss, a Redis failover
and a replica restart.

Run from the repository root: ``python -m bench.drills.cluster`` (``--short`` for a small
version, which ``make test`` runs). Each host is an ``aistack`` process with a data directory
of its own, sharing nothing but the settings: two web hosts, three worker hosts (the first
also runs the scheduler), a PostgreSQL primary and a streaming replica that search reads
(``DATABASE_REPLICA_URLS``), and Redis through Sentinel (a master, a replica, three
sentinels: ``REDIS_SENTINELS``). While clients create documents on both web hosts, read
summaries, search and follow events, the drill SIGKILLs a worker host, SIGKILLs the Redis
master (the sentinels promote its replica, and the old master comes back as a replica), and
restarts the PostgreSQL replica. The invariants: every request is answered, 503 only while
no Redis master exists; no job is lost; every document is indexed exactly once and found
from every web host, served by the replica; events reach a stream after the failover.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import requests
from bench.drills.stack import Api, Findings, Response, Sample, Traffic, describe
from bench.drills.worker_kills import job_owners, jobs_settled, verify, wait_settled

from harness import (
    WaitTimeout,
    aistack,
    clean_env,
    free_port,
    kill_group,
    process_tree,
    stop_or_kill,
    wait_for,
    wait_http_ok,
)
from harness.sentinel import SentinelRedis
from harness.standby import Standby

HEADLINE = ("documents", "indexed_once", "searchable_from_every_web", "lost_jobs",
            "redis_failover_s")
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "si", "ta", "vo", "ze", "qu", "bi", "xo")


def codeword(n: int) -> str:
    """Return a word found in document ``n`` alone: its number spelled in syllables."""
    word = ""
    n += len(_SYLLABLES)  # at least two syllables
    while n:
        n, digit = divmod(n, len(_SYLLABLES))
        word += _SYLLABLES[digit]
    return word + "ly"


def content(n: int) -> str:
    return (f"Deploys happen on Tuesdays after the standup; the {codeword(n)} runbook lists "
            "who approves a rollback and who pages the on-call engineer. Change freezes start "
            f"on the first of December. Note {n}.")


class Hosts:
    """The aistack processes of the drill, each with a data directory of its own."""

    def __init__(self, root: Path, environ: dict[str, str]) -> None:
        self.root = root
        self.environ = environ
        self.processes: dict[str, Any] = {}
        self.webs: dict[str, str] = {}
        self.cleanups: list[Callable[[], None]] = []

    def start(self, host: str, name: str, *args: str) -> None:
        home = self.root / "hosts" / host
        home.mkdir(parents=True, exist_ok=True)
        env = clean_env(AISTACK_HOME=str(home), **self.environ)
        self.processes[name] = aistack(*args, env=env, log=self.log(name))

    def web(self, host: str) -> str:
        port = free_port()
        self.start(host, host, "web", "--port", str(port), "--workers", "1")
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/healthz", timeout=120, process=self.processes[host],
                     log=self.log(host))
        self.webs[host] = base
        return base

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def holding_jobs(self, names: list[str]) -> tuple[str, int] | None:
        """Return a host of ``names`` whose worker runs jobs right now, and how many."""
        owners = job_owners()
        for name in names:
            with contextlib.suppress(psutil.NoSuchProcess):
                held = sum(owners[p.pid] for p in process_tree(self.processes[name].pid))
                if held:
                    return name, held
        return None

    def kill(self, name: str) -> None:
        kill_group(self.processes.pop(name), timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            stop_or_kill(self.processes.pop(name), timeout=20, group=True)
        while self.cleanups:
            self.cleanups.pop()()


class EventFollower:
    """An event stream on one web host, reconnecting as a browser does; records every event."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.connections = 0
        self.opened: dict[int, float] = {}  # connection: when it opened
        self.events: list[tuple[int, dict[str, Any]]] = []  # connection, event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(requests.RequestException):
                self._follow()
            self._stop.wait(0.5)

    def _follow(self) -> None:
        with requests.get(f"{self.base}/api/v1/events", stream=True, timeout=(5, 60),
                          headers={"Authorization": f"Bearer {self.token}"}) as stream:
            if stream.status_code != 200:
                raise requests.RequestException(f"status {stream.status_code}")
            self.connections += 1
            connection = self.connections
            self.opened[connection] = time.monotonic()
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(b"data: ") and line[6:].startswith(b"{"):
                    self.events.append((connection, json.loads(line[6:])))

    def heard_live(self, document_id: int, *, created_at: float) -> bool:
        """Return whether the end of the document's indexing came live, through pub/sub: on a
        stream opened before the document was created (so not replayed on connecting)."""
        return any(event.get("object_id") == document_id and event.get("status") == "complete"
                   and event.get("kind") == "documents.index"
                   and self.opened[connection] < created_at
                   for connection, event in self.events)


def replica_chunk_reads(standby: Standby, *, user: str, database: str) -> int:
    """Return how many scans of the chunks table the replica has run (its own statistics).

    Every search that reads the replica scans it for its hits; nothing else reads it
    there (deciding whether to use the replica reads no table).
    """
    import psycopg

    with psycopg.connect(host=str(standby.sockets), port=standby.port, user=user,
                         dbname=database, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) "
                           "FROM pg_stat_user_tables WHERE relname = 'retrieval_chunk'"
                           ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def primary_database(root: Path, environ: dict[str, str]) -> Iterator[None]:
    """Start the embedded PostgreSQL as the primary, set Django up on it and migrate."""
    from aistack.runtime.embedded import EmbeddedStack

    stack = EmbeddedStack(root / "primary")
    try:
        os.environ.update({"AISTACK_HOME": str(root / "drill"),
                           "DATABASE_URL": stack.database_url(),
                           "DJANGO_SETTINGS_MODULE": "aistack.settings", **environ})
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        yield
    finally:
        from django.db import connections

        connections.close_all()
        stack.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--embedding-model", default="local:all-MiniLM-L6-v2-int8")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the end")
    parser.add_argument("--short", action="store_true",
                        help="40 documents and a scripted embedding model: about a minute")
    parser.add_argument("--keep", action="store_true", help="keep the scratch root and logs")
    args = parser.parse_args()
    args.pause = 0.0
    if args.short:
        # Slower creates, so that the failures land while documents are being created.
        args.documents, args.embedding_model, args.timeout, args.pause = (
            40, "scripted:hash", 180, 0.3)
    findings = Findings("cluster")
    root = Path(tempfile.mkdtemp(prefix="aistack-drill-cluster-"))
    (root / "logs").mkdir()
    failed = True
    try:
        # The master is called down after 2 s without an answer: not so quick that a
        # machine busy starting five hosts makes the sentinels fail over on their own.
        with SentinelRedis(root / "redis", down_after_ms=2000) as redis_group:
            findings.did(f"started Redis: master on port {redis_group.first_master}, a replica "
                         f"and 3 sentinels ({len(redis_group.sentinels)})")
            environ = {**redis_group.environ(),
                       "LOG_LEVEL": os.environ.get("DRILL_LOG_LEVEL", "WARNING"),
                       "SECRET_KEY": secrets.token_urlsafe(50),
                       "AI_EMBEDDING_MODEL": args.embedding_model,
                       "AI_CHAT_MODEL": "scripted:echo", "AI_SCRIPTED_LATENCY_SECONDS": "0.1",
                       "AI_RATE_LIMIT": "1000000/minute", "WRITE_RATE_LIMIT": "1000000/minute",
                       "JOB_LEASE_SECONDS": "5", "JOB_PENDING_TIMEOUT_SECONDS": "5",
                       "RECONCILE_INTERVAL_SECONDS": "1", "JOB_RETRY_BACKOFF_SECONDS": "0.5"}
            with primary_database(root, environ):
                run(args, findings, root, redis_group, environ)
        failed = bool(findings.failures)
    finally:
        if args.keep or failed:
            print(f"logs kept in {root / 'logs'}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return findings.finish(headline=HEADLINE)


def run(args: argparse.Namespace, findings: Findings, root: Path, redis_group: SentinelRedis,
        environ: dict[str, str]) -> None:
    from django.db import close_old_connections, connection

    from aistack.accounts.services import api_token_create, user_create
    from aistack.documents.models import Document
    from aistack.jobs.kinds import JobStatus
    from aistack.jobs.models import Job

    primary = connection.settings_dict
    user_name, database = primary["USER"] or "postgres", primary["NAME"]
    standby = Standby(root / "replica", host=primary["HOST"], port=int(primary["PORT"] or 5432),
                      user=user_name)
    findings.did(f"made a streaming replica with pg_basebackup (port {standby.port})")
    hosts = Hosts(root, {**environ, "DATABASE_URL": os.environ["DATABASE_URL"],
                         "DATABASE_REPLICA_URLS": standby.url(user=user_name,
                                                              database=database)})
    try:
        webs = [hosts.web("web-1"), hosts.web("web-2")]
        for n in (1, 2, 3):
            hosts.start(f"worker-{n}", f"worker-{n}", "worker", "--concurrency", "1")
        hosts.start("worker-1", "scheduler", "scheduler")
        findings.did("started 2 web hosts, 3 worker hosts and the scheduler (on worker-1), "
                     "each with a data directory of its own")
        user = user_create(username="drill", password=None)
        _, token = api_token_create(user=user, name="drill")
        apis = [Api(base, token) for base in webs]

        created: list[int] = []
        created_lock = threading.Lock()

        def create(n: int) -> Response:
            answer = apis[n % 2].call("POST", "/api/v1/documents",
                                      {"title": f"Note {n}", "content": content(n)})
            if answer.status == 201:
                with created_lock:
                    created.append(answer.body["id"])
            return answer

        def summary(web: int) -> Callable[[], Response]:
            def read() -> Response:
                with created_lock:
                    pick = created[len(created) // 2] if created else 0
                return apis[web].call("GET", f"/api/v1/documents/{pick}/summary")
            return read

        def search(web: int) -> Callable[[], Response]:
            return lambda: apis[web].call("GET", "/api/v1/search?q=rollback+runbook&k=5")

        reads = [(f"summary web-{w + 1}", summary(w)) for w in (0, 1)] + [
            (f"search web-{w + 1}", search(w)) for w in (0, 1)]
        marks: dict[str, float] = {}
        ingest_samples: list[Sample] = []

        def ingest() -> None:
            for n in range(2, args.documents):
                answer = create(n)
                ingest_samples.append(Sample(at=time.monotonic(), name="create",
                                             status=answer.status, seconds=answer.seconds,
                                             body=answer.body))
                if answer.status != 201:
                    created_failed.append(n)
                time.sleep(args.pause)

        created_failed: list[int] = []
        started = time.monotonic()
        # Two first, so that the summary readers have something to read.
        created_failed.extend(n for n in (0, 1) if create(n).status != 201)
        follower = EventFollower(webs[1], token)
        hosts.cleanups.append(follower.__exit__)
        follower.__enter__()
        with Traffic(reads, threads=4) as traffic:
            creator = threading.Thread(target=ingest, daemon=True)
            creator.start()
            wait_for(lambda: len(created) >= args.documents // 3, timeout=300,
                     message="a third of the documents")
            # The scheduler's host (worker-1) is spared: there is one scheduler.
            try:
                victim, held = wait_for(lambda: hosts.holding_jobs(["worker-2", "worker-3"]),
                                        timeout=30, interval=0.02,
                                        message="a worker host to run a job")
            except WaitTimeout:
                victim, held = "worker-2", 0
            hosts.kill(victim)
            findings.did(f"SIGKILLed {victim}, its worker running {held} job(s) "
                         f"({len(created)} documents created)")
            findings.check("the killed worker host was running a job", held > 0,
                           f"{held} job(s)")

            wait_for(lambda: len(created) >= 2 * args.documents // 3, timeout=300,
                     message="two thirds of the documents")
            marks["master_killed"] = time.monotonic()
            old = redis_group.kill_master()
            new = redis_group.wait_for_new_master(old)
            marks["master_back"] = time.monotonic()
            failover = marks["master_back"] - marks["master_killed"]
            findings.did(f"SIGKILLed the Redis master (port {old}) with {len(created)} "
                         f"documents created; the sentinels promoted port {new}")
            findings.found("redis_failover_s", round(failover, 2),
                           "from the master's SIGKILL until the promoted replica took writes")
            redis_group.restart(old)
            findings.did(f"started the old master again on port {old}, empty")

            creator.join(args.timeout)
            standby.stop()
            marks["replica_stopped"] = time.monotonic()
            time.sleep(3)
            standby.start()
            marks["replica_started"] = time.monotonic()
            findings.did("all documents created; stopped the PostgreSQL replica (immediate) for "
                         "3 s, then started it again")
            time.sleep(3)
            marks["traffic_end"] = time.monotonic()

        samples = traffic.samples + ingest_samples
        # After a failure each process skips Redis for OUTAGE_SECONDS, then tries again
        # (connecting takes up to CONNECT_TIMEOUT_SECONDS).
        from aistack.redis.connections import CONNECT_TIMEOUT_SECONDS, OUTAGE_SECONDS

        window = (marks["master_killed"],
                  marks["master_back"] + OUTAGE_SECONDS + CONNECT_TIMEOUT_SECONDS + 0.5)

        def sent_at(sample: Sample) -> float:
            return sample.at - sample.seconds

        for name in [name for name, _ in reads] + ["create"]:
            findings.found(f"requests: {name}",
                           describe([s for s in samples if s.name == name]))
        during = [s for s in samples if window[0] <= sent_at(s) < window[1]]
        findings.found("requests while no Redis master existed", describe(during))
        unanswered = [s for s in samples if s.status in (0, 500)
                      or s.status not in (200, 201, 503)]
        late_503 = [s for s in samples
                    if s.status == 503 and not window[0] <= sent_at(s) < window[1]]
        findings.check("every request answered: 200/201, a 503 only while no Redis master "
                       "existed", not unanswered and not late_503,
                       f"{len(unanswered)} unanswered or failed, {len(late_503)} 503s outside "
                       f"the failover: {Counter(s.status for s in unanswered + late_503)}")
        findings.check("every create was accepted", not created_failed,
                       f"refused: {created_failed[:10]}")

        close_old_connections()

        wait_settled(findings, timeout=args.timeout)
        findings.found("seconds_to_ingest", round(time.monotonic() - started, 1),
                       f"{args.documents} documents, from the first create until every job ended")

        # Events on the stream of web-2 opened during the failover: a document created now
        # is announced live, through a subscription on the new master.
        probe_at = time.monotonic()
        probe = create(args.documents)
        heard = False
        if probe.status == 201:
            with contextlib.suppress(WaitTimeout):
                heard = wait_for(lambda: follower.heard_live(probe.body["id"], created_at=probe_at),
                                 timeout=60, message="the probe document's event")
        findings.found("event_streams_opened", follower.connections,
                       "on web-2, reconnecting as a browser does; opened at "
                       f"{[round(at - started, 1) for at in follower.opened.values()]} s, "
                       f"the failover at {marks['master_killed'] - started:.1f} s")
        findings.check("events resume after the failover: a document created afterwards is "
                       "announced live on a stream of web-2", heard,
                       f"in {time.monotonic() - probe_at:.1f} s" if heard else "not heard")
        with contextlib.suppress(WaitTimeout):
            wait_for(jobs_settled, timeout=60, interval=0.2, message="the probe's jobs")
        documents = args.documents + 1
        findings.found("documents", Document.objects.count())
        lost = (2 * documents - Job.objects.filter(status=JobStatus.COMPLETE).count())
        findings.found("lost_jobs", lost, "jobs of the documents not complete at the end")
        failures_before = len(findings.failures)
        verify(findings, documents=documents)
        findings.found("indexed_once", len(findings.failures) == failures_before,
                       "every document complete, its chunks exactly a fresh chunking's, "
                       "each chunk with one vector")

        # Every document by its own word, from each web host, once the replica has it all
        # and the web hosts have stopped passing it over for its restart.
        from aistack.replicas import DOWN_SECONDS

        time.sleep(max(0.0, marks["replica_started"] + DOWN_SECONDS + 1 - time.monotonic()))
        wait_for(lambda: replica_caught_up(standby, user_name, database), timeout=60,
                 message="the replica to replay the primary")
        before = replica_chunk_reads(standby, user=user_name, database=database)
        missing: dict[str, list[int]] = {}
        numbers = {document_id: int(title.removeprefix("Note ")) for document_id, title
                   in Document.objects.filter(pk__in=created).values_list("pk", "title")}
        for name, base in hosts.webs.items():
            api = Api(base, token)
            for document_id, number in numbers.items():
                answer = api.call("GET", f"/api/v1/search?q={codeword(number)}&mode=text&k=3")
                ids = [hit["document_id"] for hit in answer.body.get("results", [])] \
                    if answer.status == 200 else []
                if ids[:1] != [document_id]:
                    missing.setdefault(name, []).append(document_id)
        searches = len(hosts.webs) * len(numbers)

        def served() -> int:
            return replica_chunk_reads(standby, user=user_name, database=database) - before

        # Idle backends report their statistics within 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL).
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: served() >= searches, timeout=15, interval=0.5,
                     message="the replica's statistics")
        served_by_replica = served()
        findings.found("searchable_from_every_web", not missing,
                       f"{searches} searches by each document's own word; missed: "
                       f"{ {k: v[:5] for k, v in missing.items()} }")
        findings.found("replica_chunk_reads_during_searches", served_by_replica,
                       f"for {searches} searches, each reading its hits there if served there")
        findings.check("every document found from every web host", not missing)
        findings.check("the searches were served by the replica",
                       served_by_replica >= searches)
        findings.check("no job lost", lost == 0)
        findings.found("redis_failovers", redis_group.failovers(),
                       "the sentinels' config epoch: 1 is the drill's failover alone")
        findings.check("the sentinels failed over once, when the drill killed the master",
                       redis_group.failovers() == 1)
    finally:
        hosts.stop_all()
        if standby.running():
            standby.stop()


def replica_caught_up(standby: Standby, user: str, database: str) -> bool:
    """Return whether the replica has replayed everything the primary has written so far."""
    import psycopg
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        written = cursor.fetchone()[0]
    with psycopg.connect(host=str(standby.sockets), port=standby.port, user=user,
                         dbname=database, autocommit=True) as conn:
        row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                           (written,)).fetchone()
    return bool(row and row[0])


if __name__ == "__main__":
    raise SystemExit(main())
