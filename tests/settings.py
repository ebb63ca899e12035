"""Test settings: real PostgreSQL (pgvector) and Redis, started once per test session.

The services are the same embedded ones `aistack serve` uses, in a scratch
AISTACK_HOME, so `make test` needs nothing installed on the machine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from aistack.runtime.embedded import EmbeddedStack

TEST_HOME = Path(tempfile.mkdtemp(prefix="aistack-test-"))
_stack = EmbeddedStack(TEST_HOME)


def _cleanup() -> None:
    _stack.release()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


atexit.register(_cleanup)

os.environ.update(
    {
        "AISTACK_HOME": str(TEST_HOME),
        # Built once per session, for every process a test starts with a home of its own.
        "LOCAL_MODEL_DIR": str(TEST_HOME / "models"),
        "DATABASE_URL": _stack.database_url(),
        "REDIS_URL": _stack.redis_url(),
        # Short timings so recovery paths run in seconds, not minutes.
        "JOB_LEASE_SECONDS": "3",
        "JOB_PENDING_TIMEOUT_SECONDS": "5",
        "RECONCILE_INTERVAL_SECONDS": "1",
        "JOB_RETRY_BACKOFF_SECONDS": "0.05",
        "AI_RETRY_BACKOFF_SECONDS": "0.01",
    }
)

from aistack.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Any request to a model provider that is not on this machine fails the test loudly:
# no test can spend money or leak data, whatever keys the environment holds.
AI_LOOPBACK_ONLY = True
# Read breakers from Redis on every call, so each test starts from what Redis holds.
AI_CIRCUIT_REFRESH_SECONDS = 0.0
