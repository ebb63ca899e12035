"""`aistack serve` end to end: embedded services, supervision, shutdown and restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from harness import (
    aistack,
    alive,
    clean_env,
    embedded_service_pids,
    free_port,
    http,
    kill_group,
    process_tree,
    run_aistack,
    stop,
    wait_for,
    wait_http_ok,
)

pytestmark = pytest.mark.e2e


def children_running(serve_pid: int, command: str) -> list[psutil.Process]:
    """Return the children of ``serve_pid`` started as ``aistack <command>``."""
    found = []
    for child in psutil.Process(serve_pid).children():
        try:
            if child.cmdline()[2:4] == ["aistack", command]:
                found.append(child)
        except psutil.Error:
            continue
    return found


def worker_pids(serve_pid: int) -> set[int]:
    return {child.pid for child in children_running(serve_pid, "worker")}


def loaded(process: psutil.Process, library: str) -> bool:
    return any(library in mapped.path for mapped in process.memory_maps())


SCHED_OTHER, SCHED_IDLE = 0, 5


def thread_policies(process: psutil.Process) -> dict[int, int]:
    """Return the scheduling policy of each of the process's threads (Linux keeps one each)."""
    found = {}
    for thread in process.threads():
        stat = Path(f"/proc/{process.pid}/task/{thread.id}/stat").read_text()
        # Fields after the command: state is the 3rd field of stat, policy the 41st.
        found[thread.id] = int(stat.rsplit(")", 1)[1].split()[38])
    return found


def test_serve_runs_the_stack_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(AISTACK_HOME=str(home), LOG_LEVEL="WARNING")
    log = tmp_path / "serve.log"

    serve = aistack("serve", "--port", str(port), env=env, log=log)
    try:
        took = wait_http_ok(f"{base}/healthz", process=serve, log=log)
        print(f"serve to first /healthz: {took:.1f}s")
        wait_for(lambda: "aistack is running at" in log.read_text(), message="URL printed")
        assert "Log in at" in log.read_text()
        assert (home / "admin-password").exists()

        # Another command on the same home shares the running services.
        token = run_aistack("createuser", "alice", "--password", "long enough pass",
                            env=env).strip().splitlines()[-1]
        status, created = http("POST", f"{base}/api/v1/documents", token=token,
                               body={"title": "Kept", "content": "Data that must survive."})
        assert status == 201
        url = f"{base}/api/v1/documents/{created['id']}"
        wait_for(lambda: http("GET", url, token=token)[1]["embedding_status"] == "complete",
                 timeout=60, message="the worker to process the document")
        wait_for(lambda: http("GET", f"{base}/readyz")[0] == 200, timeout=30,
                 message="readiness with a worker heartbeat")
        # Run as root, serve says what to do about it, in place of Celery's warning.
        assert ("aistack is running as root" in log.read_text()) == (os.geteuid() == 0)
        assert "superuser privileges" not in log.read_text()

        # The worker embeds the query: the web never loads the model.
        status, found = http("GET", f"{base}/api/v1/search?q=what+must+survive&mode=vector",
                             token=token)
        assert status == 200
        assert [hit["document_id"] for hit in found["results"]] == [created["id"]]
        [web] = children_running(serve.pid, "web")
        servers = web.children(recursive=True)
        assert len([p for p in servers if "--socket-fd" in p.cmdline()]) == 2
        assert not any(loaded(p, "onnxruntime") or loaded(p, "libtorch")
                       for p in [web, *servers])
        # The processes that only supervise or send periodic jobs never set Django up.
        [scheduler] = children_running(serve.pid, "scheduler")
        for light in (psutil.Process(serve.pid), web, scheduler):
            assert light.memory_info().rss < 100 * 2**20, light.cmdline()
        # One pool process for any job, and one more for each workspace's first jobs.
        [worker] = [psutil.Process(pid) for pid in worker_pids(serve.pid)]
        [interactive] = [p for p in worker.children()
                         if "--interactive-only" in p.cmdline()]
        for lane in (worker, interactive):
            [pool] = [p for p in lane.children() if p != interactive]
            # The default model runs in ONNX Runtime: torch stays out of the workers too.
            assert loaded(pool, "onnxruntime") and not loaded(pool, "libtorch")
            # Jobs run only on CPU time nothing else wants; the thread answering the web
            # does not.
            policies = thread_policies(pool)
            assert policies[pool.pid] == SCHED_IDLE
            assert SCHED_OTHER in policies.values()

        # A crashed child is restarted.
        [crashed] = worker_pids(serve.pid)
        psutil.Process(crashed).send_signal(signal.SIGKILL)
        wait_for(lambda: worker_pids(serve.pid) - {crashed}, timeout=30,
                 message="the worker to be restarted")

        everything = [p.pid for p in process_tree(serve.pid)] + embedded_service_pids(home)
        assert len(everything) >= 6
        stopped_in = stop(serve)
        print(f"SIGTERM to exit: {stopped_in:.1f}s")
        assert serve.returncode == 0
        assert stopped_in < 10
        time.sleep(0.5)
        assert [pid for pid in everything if alive(pid)] == []
    finally:
        if serve.poll() is None:
            kill_group(serve)

    again = aistack("serve", "--port", str(port), env=env, log=log)
    try:
        wait_http_ok(f"{base}/healthz", process=again, log=log)
        status, document = http("GET", url, token=token)
        assert status == 200
        assert document["content"] == "Data that must survive."
        assert document["embedding_status"] == "complete"
        assert log.read_text().count("Created an admin user") == 1
    finally:
        stop(again)


def test_production_process_types_refuse_to_start_without_service_urls(tmp_path: Path) -> None:
    import subprocess
    import sys

    for process_type in ("web", "worker", "scheduler"):
        result = subprocess.run([sys.executable, "-m", "aistack", process_type],
                                env=clean_env(AISTACK_HOME=str(tmp_path)),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0
        assert "DATABASE_URL" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_terminated_command_stops_the_services_it_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "shell.log"
    command = aistack("manage", "shell", "-c", "import time; print('ready', flush=True); "
                      "time.sleep(120)", env=clean_env(AISTACK_HOME=str(home)), log=log)
    try:
        wait_for(lambda: "ready" in log.read_text(), timeout=90, message="the command to start")
        services = embedded_service_pids(home)
        assert len(services) == 2
        assert all(alive(pid) for pid in services)

        command.send_signal(signal.SIGTERM)
        command.wait(20)

        wait_for(lambda: not any(alive(pid) for pid in services), timeout=20,
                 message="the embedded services to stop")
    finally:
        if command.poll() is None:
            kill_group(command)
