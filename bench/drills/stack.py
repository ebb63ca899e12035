"""What every fault drill needs: real aistack processes on embedded services it may break.

A drill runs in a scratch AISTACK_HOME with its own embedded PostgreSQL and Redis
(the services ``aistack serve`` uses), starts ``aistack web|worker|scheduler`` as
real subprocesses, breaks something, and checks an invariant in the database. It
prints what it did and found as it goes, ends with one JSON line of figures, and
exits 1 when an invariant does not hold.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from bench.common import django_on_embedded_services, percentile

from harness import (
    aistack,
    embedded_service_pid,
    free_port,
    http,
    kill_group,
    process_tree,
    stop_or_kill,
    wait_for,
    wait_http_ok,
)


class Findings:
    """What a drill did and found, printed as it goes; the invariants it checked."""

    def __init__(self, drill: str) -> None:
        self.drill = drill
        self.started = time.monotonic()
        self.figures: dict[str, Any] = {}
        self.failures: list[str] = []

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s]"

    def did(self, text: str) -> None:
        """Print a step the drill took."""
        print(f"{self._stamp()} did:   {text}", flush=True)

    def found(self, name: str, value: Any, text: str = "") -> None:
        """Print a figure and keep it for the closing JSON line."""
        self.figures[name] = value
        print(f"{self._stamp()} found: {name} = {value}{f'  ({text})' if text else ''}",
              flush=True)

    def check(self, invariant: str, holds: bool, detail: str = "") -> bool:
        """Print whether an invariant holds; a failure makes the drill exit 1."""
        if not holds:
            self.failures.append(invariant + (f": {detail}" if detail else ""))
        print(f"{self._stamp()} {'PASS' if holds else 'FAIL'}:  {invariant}"
              f"{f'  ({detail})' if detail else ''}", flush=True)
        return holds

    def finish(self, *, headline: Sequence[str] = ()) -> int:
        """Print the figures as one JSON line; return the exit status.

        The figures named in ``headline`` are also at the line's top level.
        """
        print(json.dumps({"drill": self.drill, "ok": not self.failures,
                          "seconds": round(time.monotonic() - self.started, 1),
                          **{name: self.figures.get(name) for name in headline},
                          "figures": self.figures, "failures": self.failures}), flush=True)
        return 1 if self.failures else 0


@dataclass(frozen=True, kw_only=True)
class Response:
    """An API answer: status, parsed body, and how long it took."""

    status: int  # 0 when no HTTP answer came (connection refused, timeout)
    body: Any
    seconds: float


class Api:
    """JSON over HTTP to a running ``aistack web``, with a bearer token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 30) -> Response:
        """Send one request; a refused or timed-out connection is status 0, not an exception."""
        started = time.monotonic()
        try:
            status, parsed = http(method, self.base + path, token=self.token, body=body,
                                  timeout=timeout)
        except OSError as error:
            return Response(status=0, body=str(error), seconds=time.monotonic() - started)
        return Response(status=status, body=parsed, seconds=time.monotonic() - started)


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One answer recorded by :class:`Traffic`, ``at`` when it arrived (monotonic)."""

    at: float
    name: str
    status: int
    seconds: float
    body: Any


class Traffic:
    """Client threads sending requests in a loop, recording every answer, until stopped."""

    def __init__(self, requests: Sequence[tuple[str, Callable[[], Response]]], *,
                 threads: int = 4, pause: float = 0.05) -> None:
        self.requests = requests
        self.threads = threads
        self.pause = pause
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, offset: int) -> None:
        turn = offset
        while not self._stop.is_set():
            name, send = self.requests[turn % len(self.requests)]
            turn += 1
            answer = send()
            with self._lock:
                self.samples.append(Sample(at=time.monotonic(), name=name, status=answer.status,
                                           seconds=answer.seconds, body=answer.body))
            self._stop.wait(self.pause)

    def __enter__(self) -> Traffic:
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)

    def between(self, start: float, end: float) -> list[Sample]:
        """Return the answers that arrived in ``[start, end)``."""
        with self._lock:
            return [s for s in self.samples if start <= s.at < end]


def describe(samples: Sequence[Sample]) -> str:
    """Summarize answers: how many of each status, p50 and max seconds."""
    if not samples:
        return "no requests"
    statuses = Counter(s.status for s in samples)
    times = [s.seconds for s in samples]
    return (f"{len(samples)} requests, status {dict(sorted(statuses.items()))}, "
            f"p50 {percentile(times, 0.5) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


class Stack:
    """A scratch AISTACK_HOME, its embedded services, and aistack processes on them."""

    def __init__(self, name: str, *, keep: bool = False, **environ: str) -> None:
        self.name = name
        self.keep = keep
        self.environ = environ
        self.home = Path(tempfile.mkdtemp(prefix=f"aistack-drill-{name}-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._release: Callable[[], None] | None = None

    def __enter__(self) -> Stack:
        (self.home / "logs").mkdir()
        self._release = django_on_embedded_services(self.home, **self.environ)
        # Children get the same environment: the embedded services' URLs included.
        self.env = dict(os.environ)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for name in list(self.processes):
            self.stop(name)
        from django.db import connections

        connections.close_all()
        if self._release is not None:
            self._release()
        if self.keep or exc is not None:
            print(f"logs kept in {self.home / 'logs'}", flush=True)
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    # Processes.

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``aistack ARGS`` in its own process group, logging to logs/NAME.log."""
        process = aistack(*args, env=self.env, log=self._log_path(name))
        self.processes[name] = process
        return process

    def tree(self, name: str) -> set[int]:
        """Return the pids of a process and all its children."""
        try:
            return {process.pid for process in process_tree(self.processes[name].pid)}
        except psutil.NoSuchProcess:
            return set()

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children (a worker's pool), as the OOM killer would."""
        kill_group(self.processes.pop(name), timeout=30)

    def stop(self, name: str) -> None:
        """SIGTERM a process group; SIGKILL what is left after 20 seconds."""
        stop_or_kill(self.processes.pop(name), timeout=20, group=True)

    def web(self, name: str = "web") -> str:
        """Start ``aistack web`` on a free port; return its base URL once it answers."""
        port = free_port()
        return self._answering(name, self.start(name, "web", "--port", str(port)), port)

    def serve(self) -> str:
        """Start ``aistack serve``: web, worker and scheduler, supervised, on these services."""
        port = free_port()
        return self._answering("serve", self.start("serve", "serve", "--port", str(port)), port)

    def roles(self) -> dict[str, int]:
        """Return the pid of each child ``aistack serve`` runs now, by role."""
        found = {}
        for child in psutil.Process(self.processes["serve"].pid).children():
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if argv[1:3] == ["-m", "aistack"] and child.status() != psutil.STATUS_ZOMBIE:
                found[argv[3]] = child.pid
        return found

    def _answering(self, name: str, process: subprocess.Popen[bytes], port: int) -> str:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/healthz", timeout=120, process=process, log=self._log_path(name))
        return base

    def log(self, name: str) -> str:
        """Return what process ``name`` has written to its log."""
        return self._log_path(name).read_text(errors="replace")

    def _log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    # Users.

    def token(self, username: str = "drill") -> tuple[Any, str]:
        """Create a user; return it and an API token."""
        from aistack.accounts.services import api_token_create, user_create

        user = user_create(username=username, password=None)
        _, token = api_token_create(user=user, name="drill")
        return user, token

    # Services.

    def redis_flush_and_kill(self) -> None:
        """Drop all of Redis's data (FLUSHALL), then SIGKILL the server."""
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.REDIS_URL).flushall()
        pid = embedded_service_pid(self.home, "redis")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid), timeout=10, message="redis to die")

    def redis_start(self) -> None:
        """Start the embedded Redis again (empty: it keeps nothing on disk)."""
        from aistack.runtime.embedded import EmbeddedStack

        EmbeddedStack(self.home).redis_url()

    def postgres_stop(self) -> None:
        """Stop PostgreSQL the way an orchestrator restarting it does (fast shutdown)."""
        pid = embedded_service_pid(self.home, "postgresql")
        os.kill(pid, signal.SIGINT)
        wait_for(lambda: not psutil.pid_exists(pid), timeout=30, message="postgres to stop")

    def postgres_start(self) -> None:
        """Start the embedded PostgreSQL again, on the same data directory."""
        # In a process of its own: pgserver remembers in this one that it started the
        # server, and would take the stopped server for a running one.
        subprocess.run([sys.executable, "-c", "import sys, pathlib; from aistack.runtime.embedded "
                        "import EmbeddedStack; EmbeddedStack(pathlib.Path(sys.argv[1]))"
                        ".database_url()", str(self.home)], check=True, timeout=60)
