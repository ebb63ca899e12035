"""What tests, benches and drills share: waiting, HTTP, aistack as a subprocess.

Tests import it as ``harness`` (pytest puts the repository root on the path), drills
too (``python -m bench.drills.NAME`` runs from the root), and a bench run as a script
(``python bench/NAME.py``) puts the root on its path first.

:func:`wait_for` fails with :class:`WaitTimeout`, an ``AssertionError``: in a test a
condition that never came is a failed expectation; a drill catches it to report it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

import psutil

T = TypeVar("T")

# Variables a test session or a bench sets for itself; a spawned `aistack serve` must not
# see them, or it would use that database instead of starting its own.
_TEST_ONLY = ("DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL", "REDIS_SENTINELS",
              "AISTACK_HOME", "DJANGO_SETTINGS_MODULE")

Service = Literal["postgresql", "redis"]
# Where the embedded services (aistack.runtime.embedded) write their pids, under AISTACK_HOME.
_PID_FILES: dict[Service, Path] = {"postgresql": Path("postgres", "postmaster.pid"),
                                   "redis": Path("redis", "redis.pid")}


# Waiting.


class WaitTimeout(AssertionError):
    """A condition :func:`wait_for` polled did not come true in time."""


def wait_for(probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1,
             message: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; raise WaitTimeout after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# HTTP.


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, *, token: str | None = None, body: Any = None,
         timeout: float = 10) -> tuple[int, Any]:
    """Send one JSON request; return the status and the parsed body.

    An error status is returned like any other; a connection that fails raises OSError. A
    body that is not JSON comes back as (the start of) its text.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return int(status), _parsed(raw)


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")[:200]


def wait_http_ok(url: str, *, timeout: float = 120,
                 process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> float:
    """Wait until ``url`` answers 200; return the seconds it took.

    Fails at once if ``process`` exits meanwhile, showing the end of ``log``.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited early:\n{_tail(log)}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not up after {timeout}s:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log else ""


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for a loopback server: HTTP/1.1 (SDKs keep connections), no log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        """Return the request's body: as many bytes as its Content-Length says."""
        return self.rfile.read(int(self.headers.get("content-length") or 0))


def loopback_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Return a server on a free port of 127.0.0.1, a daemon thread a request; not serving yet."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server


# aistack as a subprocess.


def clean_env(**overrides: str) -> dict[str, str]:
    """Return this environment without the test session's own services, plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if key not in _TEST_ONLY}
    env.update(overrides)
    return env


def aistack(*args: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``aistack ARGS`` in its own process group, its output going to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "aistack", *args], env=dict(env),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_aistack(*args: str, env: Mapping[str, str], timeout: float = 120) -> str:
    """Run ``aistack ARGS`` to completion and return its stdout."""
    result = subprocess.run([sys.executable, "-m", "aistack", *args], env=dict(env),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def stop(process: subprocess.Popen[bytes], *, timeout: float = 15, group: bool = False) -> float:
    """SIGTERM a process, or with ``group`` its process group; return the seconds it took to exit.

    Raises subprocess.TimeoutExpired if it is still running after ``timeout``.
    """
    started = time.monotonic()
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout)
    return time.monotonic() - started


def stop_or_kill(process: subprocess.Popen[bytes], *, timeout: float, group: bool = False) -> None:
    """:func:`stop` a process; SIGKILL its process group if it is not gone after ``timeout``."""
    try:
        stop(process, timeout=timeout, group=group)
    except ProcessLookupError:
        pass  # the group has exited already
    except subprocess.TimeoutExpired:
        kill_group(process)


def kill_group(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    """SIGKILL a process and its process group (a worker's pool), as the OOM killer would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


def process_tree(pid: int) -> list[psutil.Process]:
    """Return a process and all its descendants."""
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def alive(pid: int) -> bool:
    """Return whether ``pid`` runs (a zombie does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def embedded_service_pid(home: Path, service: Service) -> int:
    """Return the pid of an embedded service of ``home``, from the file it writes."""
    return int((home / _PID_FILES[service]).read_text().split()[0])


def embedded_service_pids(home: Path) -> list[int]:
    """Return the pids of the embedded services of ``home`` that have written one."""
    return [embedded_service_pid(home, service)
            for service, path in _PID_FILES.items() if (home / path).exists()]
