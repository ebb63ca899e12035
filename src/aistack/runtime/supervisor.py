"""Run child processes, restart the ones that crash, stop them all on request."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_MAX_SECONDS = 30.0
# A child that ran this long before crashing starts again without delay.
STABLE_AFTER_SECONDS = 60.0


def _die_with_parent() -> None:
    # Children run in their own session (so a terminal's Ctrl-C reaches only us and
    # we stop them in order); ask the kernel to stop them too if we are killed.
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start_child(nice: int) -> Callable[[], None]:
    def start() -> None:
        _die_with_parent()
        if nice:
            os.nice(nice)

    return start


@dataclass(kw_only=True)
class Child:
    """A supervised process."""

    name: str
    argv: Sequence[str]
    # Added to the child's niceness: background work yields the CPU to requests.
    nice: int = 0
    # Descriptors the child inherits (a listening socket), beyond stdin, out and err.
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start_at: float = 0.0
    backoff: float = field(default=1.0)

    def start(self, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(list(self.argv), env=dict(env),
                                        pass_fds=self.pass_fds,
                                        preexec_fn=_start_child(self.nice))
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


class Supervisor:
    """Keep a set of children running until asked to stop."""

    def __init__(self, children: Sequence[Child], *, env: Mapping[str, str],
                 stop_timeout: float = 7.0) -> None:
        self.children = list(children)
        self.env = env
        self.stop_timeout = stop_timeout
        self._stopping = False

    def request_stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        """Ask the supervisor to stop (a signal handler)."""
        self._stopping = True

    def run(self, *, on_tick: Callable[[], None] | None = None) -> None:
        """Start every child and supervise until a stop is requested, then stop them all."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        for child in self.children:
            child.start(self.env)
        try:
            while not self._stopping:
                self._restart_exited()
                if on_tick is not None:
                    on_tick()
                time.sleep(0.2)
        finally:
            self.stop()

    def _restart_exited(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.next_start_at:
                    child.start(self.env)
                continue
            code = child.process.poll()
            if code is None:
                continue
            ran_for = now - child.started_at
            if ran_for >= STABLE_AFTER_SECONDS:
                child.backoff = 1.0
            logger.error("%s exited with code %s after %.1fs; restarting in %.0fs",
                         child.name, code, ran_for, child.backoff)
            # The process group may still hold grandchildren (a worker's pool).
            child.signal_group(signal.SIGKILL)
            child.process = None
            child.restarts += 1
            child.next_start_at = now + child.backoff
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX_SECONDS)

    def stop(self) -> None:
        """SIGTERM every child; SIGKILL its whole process group after the timeout."""
        for child in self.children:
            # The child alone, not its group: a worker then finishes its pool's running
            # jobs (Celery's warm shutdown) where SIGTERM to each pool process would
            # kill them mid-job; a web server drains its own workers the same way.
            if child.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", child.name)
        for child in self.children:
            # Kill the whole group: pool processes of a worker must not outlive it.
            child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()


def _die_with_parent_in_its_group() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Companion:
    """A child process kept running beside this one until this one stops.

    It stays in this process's group, so whatever signals or kills the group (a
    terminal's Ctrl-C, a kill of the group) reaches it too; and if this process dies
    without stopping it, the kernel sends it SIGTERM. A companion that exits is
    started again, after the same growing pause the supervisor uses.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        # Held to start the process or to stop for good: never one without the other seeing.
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watcher",
                                         daemon=True)

    def __enter__(self) -> Companion:
        self._start()
        self._watcher.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = subprocess.Popen(self.argv, env=self.env,
                                            preexec_fn=_die_with_parent_in_its_group)
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self.process is not None
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_SECONDS:
                backoff = 1.0
            logger.error("%s exited with code %s; restarting in %.0fs", self.name, code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_SECONDS)
            self._start()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the companion and wait for it to finish its work; then SIGKILL it."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            process.kill()
            process.wait()
