"""The cluster drill at a short size: two web hosts, three worker hosts, a PostgreSQL replica
and Redis through Sentinel, through a worker host's loss, a Redis failover and a replica
restart."""

from __future__ import annotations

import pytest

from tests.drills.drill import run_drill

pytestmark = pytest.mark.e2e


def test_a_cluster_loses_no_work_and_answers_every_request_through_its_failures() -> None:
    report = run_drill("cluster", "--short", timeout=400)
    figures = report["figures"]
    assert report["failures"] == []
    assert report["documents"] == 41
    assert report["indexed_once"] is True
    assert report["searchable_from_every_web"] is True
    assert report["lost_jobs"] == 0
    # The sentinels promoted the replica within seconds (2 s to call the master down).
    assert 0 < report["redis_failover_s"] < 30
    assert figures["replica_chunk_reads_during_searches"] >= 2 * 41
    assert figures["redis_failovers"] == 1
    assert "status {200: " in figures["requests while no Redis master existed"]
