"""A worker pool process lowers the priority of the thread that runs its jobs, alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aistack.ai import worker as ai_worker
from aistack.ai.backends import local_service

SCHED_OTHER, SCHED_IDLE = 0, 5


def nice_and_policy(thread_id: int) -> tuple[int, int]:
    """Return a thread of this process's niceness and scheduling policy (Linux: per thread)."""
    fields = Path(f"/proc/self/task/{thread_id}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16]), int(fields[38])


def start_as_a_pool_process(monkeypatch: pytest.MonkeyPatch, *, nice: int,
                            idle: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Run the pool process start hook in a fresh thread, as Celery's job thread would.

    Return the (niceness, policy) of that thread afterwards, and of the thread it
    started to serve the web's model requests.
    """
    monkeypatch.setattr(ai_worker, "task_nice", nice)
    monkeypatch.setattr(ai_worker, "task_idle", idle)
    found: dict[str, tuple[int, int]] = {}

    def job_thread() -> None:
        ai_worker._pool_process_started()
        found["job"] = nice_and_policy(threading.get_native_id())

    thread = threading.Thread(target=job_thread)
    thread.start()
    thread.join()
    service = local_service.service_start(preload=[])
    assert service.native_id is not None
    try:
        return found["job"], nice_and_policy(service.native_id)
    finally:
        local_service.service_stop()


@pytest.mark.usefixtures("clean_redis")
def test_task_nice_lowers_the_job_thread_and_not_the_one_serving_the_web(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, _ = nice_and_policy(threading.get_native_id())

    job, serving = start_as_a_pool_process(monkeypatch, nice=7, idle=False)

    assert job == (min(base + 7, 19), SCHED_OTHER)
    assert serving == (base, SCHED_OTHER)


@pytest.mark.usefixtures("clean_redis")
def test_task_idle_runs_the_jobs_on_idle_cpu_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = nice_and_policy(threading.get_native_id())

    job, serving = start_as_a_pool_process(monkeypatch, nice=0, idle=True)

    assert job[1] == SCHED_IDLE
    assert serving == (base, SCHED_OTHER)
