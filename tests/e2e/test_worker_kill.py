"""A worker killed mid-job: the reconciler re-delivers the work and it completes once."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.retrieval.chunking import chunk_text
from aistack.retrieval.models import Chunk
from harness import aistack, clean_env, kill_group, stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def database_url_of_test_db() -> str:
    params = connection.settings_dict
    return f"postgresql://{params['USER']}@{quote(params['HOST'], safe='')}/{params['NAME']}"


def test_killed_worker_is_recovered_by_the_reconciler(
    alice: User, clean_redis: None, tmp_path: Path
) -> None:
    env = clean_env(
        AISTACK_HOME=str(tmp_path / "home"),
        DATABASE_URL=database_url_of_test_db(),
        REDIS_URL=settings.REDIS_URL,
        JOB_LEASE_SECONDS="3",
        RECONCILE_INTERVAL_SECONDS="1",
        LOG_LEVEL="INFO",
    )
    log = tmp_path / "workers.log"
    content = "\n\n".join(f"Paragraph {n}. " + "Words of the runbook. " * 30 for n in range(20))
    document = document_create(workspace=alice.personal_workspace, title="Runbook",
                               content=content, author=alice)

    def index_job() -> Job:
        return Job.objects.get(kind=DOCUMENT_INDEX.name, object_id=document.pk)

    # Lock the chunks table against writes so the worker blocks while storing chunks,
    # after it claimed the job: a job caught in the middle, deterministically.
    blocker = psycopg.connect(database_url_of_test_db())
    blocker.execute("LOCK TABLE retrieval_chunk IN SHARE MODE")
    first = aistack("worker", "--concurrency", "1", env=env, log=log)
    try:
        wait_for(lambda: index_job().status == JobStatus.PROCESSING,
                 timeout=60, message="the worker to take the job")
        time.sleep(1)
        kill_group(first)
        killed_at = time.monotonic()
    finally:
        blocker.rollback()
        blocker.close()
        if first.poll() is None:
            kill_group(first)

    second = aistack("worker", "--concurrency", "1", env=env, log=log)
    beat = aistack("scheduler", env=env, log=log)
    try:
        wait_for(lambda: Document.objects.get(pk=document.pk).embedding_status
                 == JobStatus.COMPLETE, timeout=90, message="recovery")
        recovered_in = time.monotonic() - killed_at
        print(f"recovered {recovered_in:.1f}s after the worker was killed")
    finally:
        stop(beat)
        stop(second)

    expected = chunk_text(content)
    stored = list(Chunk.objects.filter(document_id=document.pk).order_by("ordinal"))
    assert [c.text for c in stored] == [spec.text for spec in expected]
    assert index_job().attempts == 2
    assert "reconciler re-delivered" in log.read_text()
