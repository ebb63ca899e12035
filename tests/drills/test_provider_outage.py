"""The primary model provider down: the fallback serves, the circuit opens and closes."""

from __future__ import annotations

import pytest

from tests.drills.drill import run_drill

pytestmark = pytest.mark.e2e


def test_provider_outage_is_served_by_the_fallback_and_the_circuit_recovers() -> None:
    report = run_drill("provider_outage", "--healthy", "3", "--outage", "6",
                       "--open-seconds", "2")
    figures = report["figures"]
    assert report["failures"] == []
    assert figures["outage_requests"] > 10
    assert figures["outage_served_by_fallback"] == figures["outage_requests"]
    assert figures["seconds_to_open"] < 3
    # Most requests during the outage never reached the provider.
    assert figures["provider_calls_during_outage"] < figures["outage_requests"] / 2
    assert figures["seconds_to_close"] < 2 + 5
