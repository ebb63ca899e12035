"""Fixtures for the AI layer: model settings, the scripted backend, fake vendor servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ai.vendors import VendorServer

TEST_API_KEY = "sk-test-not-a-real-key-0123456789"


@pytest.fixture
def vendor() -> Iterator[VendorServer]:
    server = VendorServer()
    yield server
    server.close()
