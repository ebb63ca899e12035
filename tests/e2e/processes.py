"""Start aistack commands as real subprocesses and talk to them over HTTP."""

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

# Variables the test session sets for itself; a spawned `aistack serve` must not see
# them, or it would use the test database instead of starting its own.
_TEST_ONLY = ("DATABASE_URL", "REDIS_URL", "AISTACK_HOME", "DJANGO_SETTINGS_MODULE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
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


def http(method: str, url: str, *, token: str | None = None, body: Any = None,
         timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_http_ok(url: str, *, timeout: float = 120,
                 process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> float:
    """Wait until ``url`` answers 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited early:\n{log.read_text()[-4000:] if log else ''}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    tail = log.read_text()[-4000:] if log else ""
    raise AssertionError(f"{url} not up after {timeout}s:\n{tail}")


def process_tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def embedded_service_pids(home: Path) -> list[int]:
    pids = []
    postmaster = home / "postgres" / "postmaster.pid"
    if postmaster.exists():
        pids.append(int(postmaster.read_text().splitlines()[0]))
    redis_pid = home / "redis" / "redis.pid"
    if redis_pid.exists():
        pids.append(int(redis_pid.read_text().strip()))
    return pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(process: subprocess.Popen[bytes], *, timeout: float = 15) -> float:
    """SIGTERM a process and return the seconds it took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout)
    return time.monotonic() - started


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
