"""Workers SIGKILLed while documents ingest: nothing lost, nothing done twice."""

from __future__ import annotations

import pytest

from tests.drills.drill import run_drill

pytestmark = pytest.mark.e2e


def test_documents_survive_workers_killed_mid_job() -> None:
    # Hashed embeddings: a restarted worker would otherwise spend most of the test
    # loading the local model again; the drill itself runs with it.
    report = run_drill("worker_kills", "--documents", "30", "--kills", "3",
                       "--embedding-model", "scripted:hash", "--timeout", "150")
    figures = report["figures"]
    assert report["failures"] == []
    assert figures["kills"] == 3
    assert figures["documents_complete"] == 30
    assert figures["jobs_complete"] == 60
    assert figures["duplicate_chunk_ordinals"] == 0
    assert figures["documents_with_wrong_chunks"] == 0
    assert figures["chunks"] > 30
    assert figures["vectors_per_chunk"] == {"1": figures["chunks"]}
    # Each kill caught at least one job in a worker's hands, and another worker finished it.
    assert figures["jobs_run_again"] >= 3
