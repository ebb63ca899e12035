"""Load: 50 users on ``aistack serve`` with a mixed workload; latency, errors, memory.

Run with ``python bench/load.py`` (5 minutes) or ``python bench/load.py --duration 30s``.
It starts ``aistack serve`` in a scratch AISTACK_HOME (embedded PostgreSQL and Redis,
web, worker and scheduler; ``scripted:echo`` as the chat model, the local embedding
model for search and indexing), creates a user and documents through the API, and
then, with locust as a library in this process:

1. measures the resident memory of every process while idle;
2. runs ``--users`` users, each waiting ``--wait`` seconds between requests, over a
   mixed workload (list, read, cached summary, search, ask, create) for ``--duration``
   after 10 s in which they start, sampling memory and CPU meanwhile; prints requests,
   errors, p50 and p99 per endpoint, and each process's share of the CPU;
3. once the workers have processed the documents the load created, measures
   requests/s on a cached JSON endpoint (the summary) with ``--flood-users`` users that
   never wait, and the CPU that the web processes and this client spent per request,
   to show what limits it (compared with ``/healthz``, which does no work).

Memory is given as RSS (each process's resident set, shared pages counted in every
process that maps them) and PSS (shared pages divided among the processes sharing
them: the sum is what the stack really occupies).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psutil

# What tests and benches share lives at the repository's root; run as a script, add it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import bench_arguments, percentile
from harness import (
    aistack,
    clean_env,
    embedded_service_pid,
    free_port,
    http,
    process_tree,
    run_aistack,
    stop_or_kill,
    wait_for,
    wait_http_ok,
)

GIB = 1024**3
# Endpoints whose latency does not include a model call: goal p99 <= 200 ms. Search embeds
# its query only once per distinct text (then it is cached), and the users repeat theirs.
NO_MODEL = ("list documents", "read document", "read summary (cached)", "search",
            "create document")
QUERIES = ("deploy rollback", "who reviews rollbacks", "change freeze december", "backup restore",
           "incident pager rotation", "vacuum and index bloat", "expense policy travel",
           "laptop badge onboarding", "certificate renewal", "queue lease retry")
TOPICS = ("Deploys happen on Tuesdays after the standup. Rollbacks need a second reviewer.",
          "Change freezes start on the first of December and end after the new year.",
          "Backups run nightly; a restore drill happens every quarter on a replica.",
          "The pager rotation is weekly; incidents get a ticket and a short review.",
          "Vacuum runs on its own, but index bloat is checked monthly by the database team.",
          "Travel needs an approved expense request; receipts go in within two weeks.",
          "New hires get a laptop and a badge on their first day of onboarding.",
          "Certificates renew automatically thirty days before they expire.")


def duration(text: str) -> float:
    """Parse ``300``, ``30s``, ``5m`` or ``1h`` into seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


class Serve:
    """``aistack serve`` in a scratch home, and the processes it consists of."""

    def __init__(self, *, web_workers: int | None, keep: bool) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="aistack-load-"))
        self.keep = keep
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # One user's traffic stands for fifty: the per-user limits are lifted.
        self.env = clean_env(AISTACK_HOME=str(self.home), AI_CHAT_MODEL="scripted:echo",
                             LOG_LEVEL="WARNING", AI_RATE_LIMIT="1000000/minute",
                             WRITE_RATE_LIMIT="1000000/minute")
        if web_workers is not None:
            self.env["WEB_CONCURRENCY"] = str(web_workers)
        self.process: subprocess.Popen[bytes] | None = None

    @contextmanager
    def running(self) -> Iterator[Serve]:
        log = self.home / "serve.log"
        self.process = aistack("serve", "--port", str(self.port), env=self.env, log=log)
        try:
            wait_http_ok(f"{self.base}/healthz", timeout=180, process=self.process, log=log)
            yield self
        finally:
            stop_or_kill(self.process, timeout=30)
            if self.keep:
                print(f"kept {self.home}")
            else:
                shutil.rmtree(self.home, ignore_errors=True)

    def token(self) -> str:
        """Create a user with ``aistack createuser``; return its API token."""
        return run_aistack("createuser", "load", env=self.env).strip().splitlines()[-1]

    def web_servers(self) -> list[psutil.Process]:
        """Return the processes that serve requests (a parent only supervises them)."""
        web = self.processes()["web"]
        # Each on a socket of its own (Linux), or uvicorn's children on a shared one.
        serving = [p for p in web[1:]
                   if any(mark in " ".join(p.cmdline()) for mark in ("--socket-fd", "spawn_main"))]
        return serving or web[:1]

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Return every process of the stack by role, each with its children."""
        return self.stack().processes()

    def stack(self) -> Stack:
        """Return what finds the running stack's processes (it can go to another process)."""
        assert self.process is not None
        return Stack(supervisor=self.process.pid, home=self.home)


@dataclass(frozen=True)
class Stack:
    """The processes of a running ``aistack serve``: its supervisor's and the services'."""

    supervisor: int
    home: Path

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Return every process of the stack by role, each with its children."""
        serve = psutil.Process(self.supervisor)
        found: dict[str, list[psutil.Process]] = {"serve (supervisor)": [serve]}
        for child in serve.children():
            role = child.cmdline()[3] if len(child.cmdline()) > 3 else child.name()
            found[role] = process_tree(child.pid)
        found["postgresql"] = process_tree(embedded_service_pid(self.home, "postgresql"))
        found["redis"] = [psutil.Process(embedded_service_pid(self.home, "redis"))]
        return found


@dataclass
class Memory:
    """The largest resident memory seen per role, in bytes."""

    rss: dict[str, int] = field(default_factory=dict)
    pss: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def sample(self, stack: Stack) -> None:
        """Measure every process now; keep the largest figures."""
        rss_total = pss_total = 0
        for role, processes in stack.processes().items():
            rss = pss = 0
            for process in processes:
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += info.pss
            self.rss[role] = max(self.rss.get(role, 0), rss)
            self.pss[role] = max(self.pss.get(role, 0), pss)
            self.count[role] = len(processes)
            rss_total += rss
            pss_total += pss
        self.rss["total"] = max(self.rss.get("total", 0), rss_total)
        self.pss["total"] = max(self.pss.get("total", 0), pss_total)

    def show(self, title: str, goal_gib: float) -> None:
        """Print the figures per process and the total against ``goal_gib``."""
        print(f"\n{title}")
        print(f"  {'process':22s} {'procs':>5s} {'RSS MiB':>9s} {'PSS MiB':>9s}")
        for role in [*sorted(r for r in self.rss if r != "total"), "total"]:
            print(f"  {role:22s} {self.count.get(role, ''):>5} {self.rss[role] / 2**20:9.0f} "
                  f"{self.pss[role] / 2**20:9.0f}")
        print(f"  goal: total < {goal_gib} GiB -> RSS {self.rss['total'] / GIB:.2f} GiB "
              f"({'met' if self.rss['total'] < goal_gib * GIB else 'missed'}), "
              f"PSS {self.pss['total'] / GIB:.2f} GiB "
              f"({'met' if self.pss['total'] < goal_gib * GIB else 'missed'})")


@dataclass
class CpuUse:
    """CPU time per role over a run, from samples of every process (new ones from zero)."""

    client: int
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, tuple[str, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    ended: float = field(default_factory=time.monotonic)

    def sample(self, stack: Stack) -> None:
        """Read the CPU time of every process of the stack, and of the load generator."""
        roles = {**stack.processes(), "load generator": [psutil.Process(self.client)]}
        for role, processes in roles.items():
            for process in processes:
                if (used := process_cpu_seconds(process)) is None:
                    continue  # gone
                # A process first seen after the first sample started after it: from zero.
                self.first.setdefault(process.pid, used if not self.last else 0.0)
                self.last[process.pid] = (role, used)
        self.ended = time.monotonic()

    def show(self) -> None:
        """Print each role's share of the machine's CPU over the sampled time."""
        seconds = self.ended - self.started
        per_role: dict[str, float] = defaultdict(float)
        for pid, (role, used) in self.last.items():
            per_role[role] += used - self.first[pid]
        print(f"\n  CPU over the mixed load (a core is 100%; the machine has "
              f"{psutil.cpu_count()}):")
        for role, used in sorted(per_role.items(), key=lambda item: -item[1]):
            print(f"    {role:22s} {used / seconds:6.0%}")
        # A process that only supervises the web's (under 2% of their CPU) is left out.
        web = sorted((used - self.first[pid] for pid, (role, used) in self.last.items()
                      if role == "web"), reverse=True)
        serving = [used for used in web if used >= 0.02 * sum(web)]
        print(f"    split of the web's CPU between its {len(serving)} serving processes: "
              + " / ".join(f"{used / (sum(serving) or 1.0):.0%}" for used in serving))


def _sample_until_told(stack: Stack, client: int, every: float, stop: Event,
                       results: Connection) -> None:
    memory, cpu = Memory(), CpuUse(client=client)
    while True:
        memory.sample(stack)
        cpu.sample(stack)
        if stop.wait(every):
            break
    results.send((memory, cpu))


class Sampler:
    """Memory and CPU of the stack sampled every ``every`` seconds, from another process.

    Reading the memory maps of some thirty processes takes about 0.15 s of CPU. Done in
    the load generator, it would hold up the responses in flight each time, and the
    delay would show in their latency as if the server had taken it.
    """

    def __init__(self, stack: Stack, every: float = 2.0) -> None:
        context = multiprocessing.get_context("spawn")
        # A one-way pipe is a plain file descriptor, which gevent (once locust is
        # imported) leaves blocking; a socket pair it would make non-blocking.
        self._results, results = context.Pipe(duplex=False)
        self._stop = context.Event()
        self._process = context.Process(
            target=_sample_until_told, args=(stack, os.getpid(), every, self._stop, results))
        self._process.start()

    def stop(self) -> tuple[Memory, CpuUse]:
        """Take a last sample; return the largest memory seen and the CPU used meanwhile."""
        self._stop.set()
        memory, cpu = self._results.recv()
        self._process.join(10)
        return memory, cpu


def model_loaded_in(serve: Serve) -> list[str]:
    """Return the roles with a process that has loaded the embedding model's runtime."""
    loaded = []
    for role, processes in serve.processes().items():
        for process in processes:
            try:
                if any("libtorch" in m.path or "onnxruntime" in m.path
                       for m in process.memory_maps()):
                    loaded.append(f"{role} (pid {process.pid})")
            except psutil.Error:
                continue
    return loaded


def seed(serve: Serve, token: str, documents: int) -> list[int]:
    """Create documents through the API and wait until indexed and summarized."""
    rng = random.Random(6)

    def create(n: int) -> int:
        text = "\n\n".join(rng.sample(TOPICS, 4)) + f"\n\nDocument {n}."
        status, body = http("POST", f"{serve.base}/api/v1/documents", token=token,
                            body={"title": f"Team note {n}", "content": text}, timeout=60)
        assert status == 201, body
        return int(body["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, range(documents)))

    wait_for(lambda: processed(serve, token), timeout=600, interval=0.5,
             message="the documents to be processed")
    return ids


def processed(serve: Serve, token: str) -> bool:
    """Return whether every document is indexed and summarized."""
    offset, count = 0, 1
    while offset < count:
        status, body = http("GET", f"{serve.base}/api/v1/documents?limit=100&offset={offset}",
                            token=token, timeout=60)
        if status != 200 or any(d["embedding_status"] != "complete"
                                or d["summary_status"] != "complete" for d in body["items"]):
            return False
        offset, count = offset + 100, body["count"]
    return True


class Latencies:
    """Exact response times and failures per endpoint, from locust's request events."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, int] = defaultdict(int)
        self.examples: dict[str, str] = {}

    def record(self, name: str, response_time: float, exception: Any = None,
               **_: Any) -> None:
        """Take one of locust's request events."""
        self.times[name].append(response_time / 1000)
        if exception is not None:
            self.failures[name] += 1
            self.examples.setdefault(name, str(exception)[:200])


def run_users(user_class: type, *, users: int, seconds: float, warmup: float = 0.0) -> Latencies:
    """Run ``users`` locust users of ``user_class``; return the latencies of ``seconds``.

    The users all start at once, each opening its connection with its first request: a
    burst no steady load has. The first ``warmup`` seconds are run but not recorded.
    """
    import gevent
    from locust.env import Environment

    latencies = Latencies()
    environment = Environment(user_classes=[user_class])
    runner = environment.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(warmup)
    environment.events.request.add_listener(latencies.record)
    gevent.sleep(seconds)
    runner.quit()
    return latencies


def user_classes(*, base: str, token: str, ids: list[int], wait: tuple[float, float]) -> Any:
    """Return the locust user classes for the mixed workload and the flood."""
    from locust import FastHttpUser, between, constant, task

    headers = {"Authorization": f"Bearer {token}"}
    cached = ids[0]

    class TeamMember(FastHttpUser):
        """Someone using the knowledge base: mostly reading, sometimes asking or writing."""

        host = base
        wait_time = between(*wait)

        @task(20)
        def list_documents(self) -> None:
            self.client.get(f"/api/v1/documents?offset={random.randrange(0, 40, 20)}",
                            headers=headers, name="list documents")

        @task(25)
        def read_document(self) -> None:
            self.client.get(f"/api/v1/documents/{random.choice(ids)}", headers=headers,
                            name="read document")

        @task(20)
        def read_summary(self) -> None:
            self.client.get(f"/api/v1/documents/{random.choice(ids)}/summary", headers=headers,
                            name="read summary (cached)")

        @task(15)
        def search(self) -> None:
            self.client.get("/api/v1/search", params={"q": random.choice(QUERIES), "k": 10},
                            headers=headers, name="search")

        @task(5)
        def ask(self) -> None:
            self.client.post("/api/v1/ask", json={"question": random.choice(QUERIES), "k": 4},
                             headers=headers, name="ask (scripted model)")

        @task(5)
        def create(self) -> None:
            self.client.post("/api/v1/documents", headers=headers, name="create document",
                             json={"title": "Written under load",
                                   "content": random.choice(TOPICS)})

    class Flood(FastHttpUser):
        """A client that never waits, on one cached JSON endpoint."""

        host = base
        wait_time = constant(0)
        path = f"/api/v1/documents/{cached}/summary"

        @task
        def read(self) -> None:
            self.client.get(self.path, headers=headers, name=self.path)

    class Healthz(Flood):
        """The same, on the endpoint that does nothing: the floor of the HTTP stack."""

        path = "/healthz"

    return TeamMember, Flood, Healthz


def process_cpu_seconds(process: psutil.Process) -> float | None:
    """Return the CPU time (user and system) the process has used so far; None if it is gone."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """Return the CPU time the processes have used so far (none for those gone)."""
    return sum(process_cpu_seconds(process) or 0.0 for process in processes)


def split(processes: list[psutil.Process], before: list[float]) -> str:
    """Return each process's share of the CPU they used together since ``before``."""
    used = [(process_cpu_seconds(process) or start) - start
            for process, start in zip(processes, before, strict=True)]
    total = sum(used) or 1.0
    return " / ".join(f"{share / total:.0%}" for share in used)


def flood(serve: Serve, user_class: type, *, users: int,
          seconds: float) -> tuple[float, float, float, int]:
    """Return requests/s, web CPU ms and client CPU ms per request, and failures."""
    web = serve.processes()["web"]
    client = psutil.Process()
    web_before, client_before = cpu_seconds(web), cpu_seconds([client])
    latencies = run_users(user_class, users=users, seconds=seconds)
    requests = sum(len(t) for t in latencies.times.values())
    web_cpu = cpu_seconds(web) - web_before
    client_cpu = cpu_seconds([client]) - client_before
    return (requests / seconds, web_cpu / max(requests, 1) * 1000,
            client_cpu / max(requests, 1) * 1000, sum(latencies.failures.values()))


def flood_wrk(serve: Serve, url: str, *, token: str | None, users: int,
              seconds: float) -> tuple[float, float, float, int]:
    """``flood`` driven by wrk (C, a fraction of locust's CPU per request)."""
    web = serve.processes()["web"]
    web_before = cpu_seconds(web)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(["wrk", "-t1", f"-c{users}", f"-d{seconds:.0f}s", *headers, url],
                         capture_output=True, text=True, check=True).stdout
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    failures = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|timeout):? (\d+)",
                                               out))
    client_cpu = (children.ru_utime - children_before.ru_utime
                  + children.ru_stime - children_before.ru_stime)
    return (requests / seconds, (cpu_seconds(web) - web_before) / max(requests, 1) * 1000,
            client_cpu / max(requests, 1) * 1000, failures)


def report(latencies: Latencies, seconds: float) -> bool:
    """Print requests, errors, p50 and p99 per endpoint; return whether the goals were met."""
    print(f"\n  {'endpoint':26s} {'requests':>8s} {'errors':>7s} {'p50 ms':>8s} {'p99 ms':>8s}"
          "   goal")
    met = True
    total = errors = 0
    for name in sorted(latencies.times):
        times = latencies.times[name]
        failures = latencies.failures[name]
        total += len(times)
        errors += failures
        p99 = percentile(times, 0.99) * 1000
        goal = ""
        if name in NO_MODEL:
            goal = "p99 <= 200 ms: " + ("met" if p99 <= 200 else "missed")
            met = met and p99 <= 200
        print(f"  {name:26s} {len(times):8d} {failures:7d} "
              f"{percentile(times, 0.5) * 1000:8.1f} {p99:8.1f}   {goal}")
    for name, example in latencies.examples.items():
        print(f"  first error on {name}: {example}")
    print(f"  all: {total} requests in {seconds:.0f} s ({total / seconds:.0f}/s), "
          f"{errors} errors ({errors / max(total, 1):.2%}; goal 0)")
    return met and errors == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=duration, default=300.0,
                        help="mixed load, e.g. 30s or 5m (default 5m)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--wait", default="0.2-1.0",
                        help="seconds each user waits between requests, min-max")
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--web-workers", type=int, default=None,
                        help="WEB_CONCURRENCY (default: aistack's own)")
    parser.add_argument("--flood-users", type=int, default=100)
    parser.add_argument("--flood-seconds", type=duration, default=20.0)
    parser.add_argument("--settle", type=duration, default=10.0,
                        help="idle time before memory is read, and users' start-up time")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home")
    args = bench_arguments(parser, duration=5.0, users=3, documents=5, flood_users=4,
                           flood_seconds=2.0, settle=1.0)
    wait = tuple(float(x) for x in args.wait.split("-"))
    serve = Serve(web_workers=args.web_workers, keep=args.keep)
    with serve.running():
        print(f"model loaded at start in: {', '.join(model_loaded_in(serve)) or 'none'}")
        token = serve.token()
        started = time.monotonic()
        ids = seed(serve, token, args.documents)
        print(f"seeded {len(ids)} documents (indexed and summarized) in "
              f"{time.monotonic() - started:.0f} s; "
              f"web processes serving: {len(serve.web_servers())}")
        time.sleep(args.settle)
        idle = Memory()
        idle.sample(serve.stack())
        idle.show("idle, after seeding (the worker has the embedding model loaded)", 1.5)
        print(f"  model loaded in: {', '.join(model_loaded_in(serve)) or 'none'}")

        # Imported only now: locust patches the standard library for gevent on import.
        member, flood_user, healthz_user = user_classes(base=serve.base, token=token, ids=ids,
                                                        wait=(wait[0], wait[-1]))
        started = time.monotonic()
        status, _ = http("GET", f"{serve.base}/api/v1/search?q=warm", token=token, timeout=60)
        print(f"\nfirst search (a worker embeds the query; the web never loads the model): "
              f"{time.monotonic() - started:.1f} s, status {status}")

        print(f"\nmixed load: {args.users} users, each waiting {args.wait} s between requests, "
              f"for {args.duration:.0f} s after {args.settle:.0f} s to start them (not recorded)")
        sampler = Sampler(serve.stack())
        latencies = run_users(member, users=args.users, seconds=args.duration,
                              warmup=args.settle)
        loaded, cpu = sampler.stop()
        goals_met = report(latencies, args.duration)
        cpu.show()
        loaded.show("under load (largest seen)", 2.0)
        print(f"  model loaded in: {', '.join(model_loaded_in(serve)) or 'none'}")

        # The workers index and summarize what the load created: measured meanwhile, the
        # flood would measure the endpoint and that backlog together.
        started = time.monotonic()
        wait_for(lambda: processed(serve, token), timeout=600, interval=0.5,
                 message="the documents the load created to be processed")
        print(f"\nthe workers finished the documents the load created "
              f"{time.monotonic() - started:.0f} s after it ended")
        print(f"\ncached JSON endpoint, {args.flood_users} users that never wait, "
              f"{args.flood_seconds:.0f} s each (goal >= 1,800 req/s)")
        wrk = shutil.which("wrk")
        print(f"  client: {'wrk' if wrk else 'locust (install wrk for a lighter client)'}")
        for label, user_class, path, auth in (
                ("summary (cached)", flood_user, flood_user.path, token),
                ("/healthz (no work)", healthz_user, healthz_user.path, None)):
            serving = serve.web_servers()
            before = [process_cpu_seconds(process) or 0.0 for process in serving]
            if wrk:
                rate, web_ms, client_ms, failures = flood_wrk(
                    serve, serve.base + path, token=auth, users=args.flood_users,
                    seconds=args.flood_seconds)
            else:
                rate, web_ms, client_ms, failures = flood(
                    serve, user_class, users=args.flood_users, seconds=args.flood_seconds)
            # Two cores give 2,000 ms of CPU a second, shared by the web processes, this
            # client, PostgreSQL and Redis: the web's own cost bounds what it can serve.
            print(f"  {label:20s} {rate:7.0f} req/s   web CPU {web_ms:5.2f} ms/request "
                  f"(at most {2000 / web_ms:,.0f} req/s with both cores)   "
                  f"client CPU {client_ms:5.2f} ms/request   {failures} errors")
            print(f"  {'':20s} split of the web's CPU between its {len(serving)} processes: "
                  + split(serving, before))
    return 0 if goals_met or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
