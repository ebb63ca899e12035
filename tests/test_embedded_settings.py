"""The embedded PostgreSQL's settings: a page cache sized to the machine, ours to change."""

from __future__ import annotations

from pathlib import Path

import psutil
import psycopg

from aistack.runtime.embedded import (
    SHARED_BUFFERS_MAX_MB,
    SHARED_BUFFERS_MIN_MB,
    EmbeddedStack,
)

PAGE_CACHE_MB = ("SELECT setting::bigint * 8 / 1024 FROM pg_settings "
                 "WHERE name = 'shared_buffers'")


def page_cache_mb(home: Path, change: str | None = None) -> int:
    stack = EmbeddedStack(home)
    try:
        with psycopg.connect(stack.database_url(), autocommit=True) as db:
            found = db.execute(PAGE_CACHE_MB).fetchone()
            if change:
                db.execute(change)
    finally:
        stack.release()
    assert found is not None
    return int(found[0])


def test_the_page_cache_is_a_quarter_of_memory_unless_an_operator_said_otherwise(
    tmp_path: Path,
) -> None:
    quarter = psutil.virtual_memory().total // 4 // 2**20
    expected = max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, quarter))
    assert expected > 128  # PostgreSQL's own default, on any machine that runs the tests

    home = tmp_path / "home"
    assert page_cache_mb(home, change="ALTER SYSTEM SET shared_buffers = '160MB'") == expected
    # ALTER SYSTEM outlasts the settings written at every start.
    assert page_cache_mb(home, change="ALTER SYSTEM RESET shared_buffers") == 160
    assert page_cache_mb(home) == expected
    conf = (home / "postgres" / "postgresql.conf").read_text()
    assert conf.count("include_if_exists = 'aistack.conf'") == 1
