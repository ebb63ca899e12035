"""Redis flushed and down: reads and writes keep working, the reconciler restores the work."""

from __future__ import annotations

import pytest

from tests.drills.drill import run_drill

pytestmark = pytest.mark.e2e


def test_redis_flushed_and_down_loses_no_work_and_fails_no_request() -> None:
    report = run_drill("redis_outage", "--down", "5", "--pending", "10",
                       "--embedding-model", "scripted:hash")
    figures = report["figures"]
    assert report["failures"] == []
    # Work was in flight when Redis lost everything, and all of it completed.
    assert figures["jobs_in_flight_at_flush"] > 0
    assert figures["jobs"] == {"complete": 2 * figures["documents"]}
    for read in ("document", "summary (cached before)", "summary (in flight)", "list", "search"):
        assert "status {200: " in figures[f"while down: {read}"]
    assert "status {201: " in figures["while down: create"]
    assert "status {503: " in figures["while down: readyz"]
