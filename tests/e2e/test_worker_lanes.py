"""`aistack worker` keeps a process for each workspace's first jobs, beside its pool."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import User

from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from harness import aistack, kill_group, wait_for
from tests.e2e.test_lifecycle import service_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def interactive_lane(worker: psutil.Process) -> list[psutil.Process]:
    lanes = []
    for child in worker.children():
        try:
            if "--interactive-only" in child.cmdline():
                lanes.append(child)
        except psutil.NoSuchProcess:  # a lane just killed: gone, or a zombie not yet reaped
            continue
    return lanes


def test_a_small_workspace_is_served_ahead_of_a_flood_and_the_lane_is_kept_running(
    alice: User, bob: User, clean_redis: None, tmp_path: Path,
) -> None:
    flood = [document_create(workspace=alice.personal_workspace, title=f"Bulk {n}",
                             content="Restart the service and watch the logs. " * 20,
                             author=alice).pk for n in range(8)]
    page = document_create(workspace=bob.personal_workspace, title="One page",
                           content="Expenses need approval.", author=bob).pk

    env = {**service_env(tmp_path), "AI_SCRIPTED_LATENCY_SECONDS": "0.2"}
    process = aistack("worker", "--concurrency", "1", env=env, log=tmp_path / "worker.log")
    try:
        jobs = Job.objects.filter(object_id__in=[*flood, page])
        wait_for(lambda: jobs.filter(status=JobStatus.COMPLETE).count() == 18, timeout=120,
                 message="every job to complete")
        finished = list(jobs.order_by("finished_at").values_list("kind", "object_id"))
        # Sent after the flood, first in, first out it would come 17th.
        assert finished.index((DOCUMENT_INDEX.name, page)) < 4, finished

        worker = psutil.Process(process.pid)
        [lane] = interactive_lane(worker)
        lane.send_signal(signal.SIGKILL)
        [restarted] = wait_for(lambda: [p for p in interactive_lane(worker) if p.pid != lane.pid
                                        and p.status() != psutil.STATUS_ZOMBIE] or None,
                               timeout=30, message="the interactive lane to be restarted")
        everything = [worker, restarted, *restarted.children(recursive=True),
                      *worker.children(recursive=True)]
        process.terminate()
        assert process.wait(60) == 0
        _, alive = psutil.wait_procs(everything, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            kill_group(process)
