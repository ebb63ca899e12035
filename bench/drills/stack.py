"""What every fault drill needs: real aistack processes on embedded services it may break.

A drill runs in a scratch AISTACK_HOME with its own embedded PostgreSQL and Redis
(the services ``aistack serve`` uses), starts ``aistack web|worker|scheduler`` as
real subprocesses, breaks something, and checks an invariant in the database. It
prints what it did and found as it goes, ends with one JSON line of figures, and
exits 1 when an invariant does not hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from bench.common import django_on_embedded_services, percentile


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

    def finish(self) -> int:
        """Print the figures as one JSON line; return the exit status."""
        print(json.dumps({"drill": self.drill, "ok": not self.failures,
                          "seconds": round(time.monotonic() - self.started, 1),
                          "figures": self.figures, "failures": self.failures}), flush=True)
        return 1 if self.failures else 0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(probe: Callable[[], Any], *, timeout: float, interval: float = 0.1,
             what: str = "a condition") -> Any:
    """Poll ``probe`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


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
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {self.token}")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            return Response(status=0, body=str(error), seconds=time.monotonic() - started)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")[:200]
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
        with open(self.home / "logs" / f"{name}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "aistack", *args], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def tree(self, name: str) -> set[int]:
        """Return the pids of a process and all its children."""
        try:
            parent = psutil.Process(self.processes[name].pid)
            return {parent.pid, *(child.pid for child in parent.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children (a worker's pool), as the OOM killer would."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop(self, name: str) -> None:
        """SIGTERM a process group; SIGKILL what is left after 20 seconds."""
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

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

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # noqa: S310
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(up, timeout=120, what=f"{name} to answer")
        return base

    def log(self, name: str) -> str:
        """Return what process ``name`` has written to its log."""
        return (self.home / "logs" / f"{name}.log").read_text(errors="replace")

    # Users.

    def token(self, username: str = "drill") -> tuple[Any, str]:
        """Create a user; return it and an API token."""
        from aistack.accounts.services import api_token_create, user_create

        user = user_create(username=username, password=None)
        _, token = api_token_create(user=user, name="drill")
        return user, token

    # Services.

    def _pid(self, path: Path) -> int:
        return int(path.read_text().split()[0])

    def redis_flush_and_kill(self) -> None:
        """Drop all of Redis's data (FLUSHALL), then SIGKILL the server."""
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.REDIS_URL).flushall()
        pid = self._pid(self.home / "redis" / "redis.pid")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid), timeout=10, what="redis to die")

    def redis_start(self) -> None:
        """Start the embedded Redis again (empty: it keeps nothing on disk)."""
        from aistack.runtime.embedded import EmbeddedStack

        EmbeddedStack(self.home).redis_url()

    def postgres_stop(self) -> None:
        """Stop PostgreSQL the way an orchestrator restarting it does (fast shutdown)."""
        pid = self._pid(self.home / "postgres" / "postmaster.pid")
        os.kill(pid, signal.SIGINT)
        wait_for(lambda: not psutil.pid_exists(pid), timeout=30, what="postgres to stop")

    def postgres_start(self) -> None:
        """Start the embedded PostgreSQL again, on the same data directory."""
        # In a process of its own: pgserver remembers in this one that it started the
        # server, and would take the stopped server for a running one.
        subprocess.run([sys.executable, "-c", "import sys, pathlib; from aistack.runtime.embedded "
                        "import EmbeddedStack; EmbeddedStack(pathlib.Path(sys.argv[1]))"
                        ".database_url()", str(self.home)], check=True, timeout=60)
