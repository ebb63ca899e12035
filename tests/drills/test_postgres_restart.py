"""PostgreSQL restarted: 503s meanwhile, then the same processes carry on."""

from __future__ import annotations

import pytest

from tests.drills.drill import run_drill

pytestmark = pytest.mark.e2e


def test_postgres_restart_answers_503_then_recovers_without_restarting_processes() -> None:
    # Down long enough that the pool's doubling retry delay (1, 2, 4, 8, 16 s) would keep
    # requests failing for seconds after it is back, were the retries not cut short.
    report = run_drill("postgres_restart", "--down", "20", "--pending", "10",
                       "--embedding-model", "scripted:hash")
    figures = report["figures"]
    assert report["failures"] == []
    assert figures["processes_restarted"] == []
    assert figures["jobs"] == {"complete": 2 * figures["documents"]}
    assert figures["slowest_answer_while_down_seconds"] < 5 + 1
    assert figures["seconds_to_first_success_after_restart"] < 5
