"""The HNSW index over half-precision vectors, and the migration that builds it."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from psycopg.pq import TransactionStatus

from aistack.retrieval import selectors
from aistack.retrieval.models import EmbeddingSpace
from aistack.retrieval.selectors import SearchMode, active_space, chunk_search
from aistack.retrieval.spaces import embedding_space_index_ready
from tests.retrieval.helpers import indexed, synthetic_vectors, unit


def definition(name: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        row = cursor.fetchone()
    return None if row is None else str(row[0])


def walked(workspace_id: int, vector: list[float]) -> list[int]:
    """The HNSW walk, as the planner would take it over a large index."""
    space = active_space()
    assert space is not None
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")  # at this size it would rather sort
        try:
            return [hit.document_id for hit in chunk_search(
                workspace_ids=[workspace_id], query="q", query_vector=vector, k=1,
                mode=SearchMode.VECTOR, space=space, exact=False)]
        finally:
            cursor.execute("RESET enable_sort")


@pytest.mark.django_db(transaction=True)
def test_the_rebuild_goes_both_ways_and_finishes_a_run_interrupted_before_its_rename(
        alice: User) -> None:
    workspace = alice.personal_workspace
    document = indexed(workspace, alice, "Deploys", "Deploys run from the main branch.")
    space = active_space()
    assert space is not None
    embedding_space_index_ready(space)  # as a space past exact scans has
    name = f"chunkvector_hnsw_{space.pk}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT embedding::float4[] FROM retrieval_chunkvector "
                       "WHERE chunk_id = (SELECT min(id) FROM retrieval_chunk "
                       "WHERE document_id = %s)", [document.pk])
        vector = list(cursor.fetchone()[0])
    assert "halfvec_cosine_ops" in (definition(name) or "")
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("retrieval")
    try:
        MigrationExecutor(connection).migrate([("retrieval", "0005_posting_lists")])
        assert "vector_cosine_ops" in (definition(name) or "")
        # A run stopped between dropping the old index and renaming the new one.
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE INDEX {name}_next ON retrieval_chunkvector USING hnsw "
                f"((embedding::halfvec({space.dimensions})) halfvec_cosine_ops) "
                f"WHERE space_id = {space.pk}")
            cursor.execute(f"DROP INDEX {name}")
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert "halfvec_cosine_ops" in (definition(name) or "")
    assert definition(f"{name}_next") is None
    # The space's flag, added since, says it has its index.
    assert EmbeddingSpace.objects.get(pk=space.pk).indexed
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")
        nearest = (  # ids and widths of ours
            f"EXPLAIN SELECT chunk_id FROM retrieval_chunkvector WHERE space_id = {space.pk} "  # noqa: S608
            f"ORDER BY embedding::halfvec({space.dimensions}) <=> %s::halfvec LIMIT 5")
        cursor.execute(nearest, [str(vector)])
        plan = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_sort")
    assert name in plan
    assert walked(workspace.pk, vector) == [document.pk]


@pytest.mark.django_db(transaction=True)
def test_the_walk_sends_its_settings_with_the_search_and_leaves_none_behind(
        alice: User, bob: User) -> None:
    # Outside any transaction, as a web request searches. Bob's 12 vectors are 0.4% of
    # the index: only a walk with its settings (an iterative scan) keeps the full k.
    indexed(alice.personal_workspace, alice, "Deploys", "Deploys run from the main branch.")
    rng = random.Random(3)
    synthetic_vectors(alice.personal_workspace, 3000, rng, alice)
    synthetic_vectors(bob.personal_workspace, 12, rng, bob)
    space = active_space()
    assert space is not None
    embedding_space_index_ready(space)
    query = unit(rng, space.dimensions)

    def ranked(exact: bool) -> list[int]:
        return [chunk_id for chunk_id, _ in selectors.vector_ranking(
            space=space, workspace_ids=[bob.personal_workspace.pk], query_vector=query,
            depth=10, exact=exact)]

    with connection.cursor() as cursor, CaptureQueriesContext(connection) as sent:
        cursor.execute("SET enable_sort = off")  # at this size it would rather sort
        try:
            walked = ranked(exact=False)
        finally:
            cursor.execute("RESET enable_sort")
    assert not connection.in_atomic_block
    assert len(walked) == 10
    assert len(set(walked) & set(ranked(exact=True))) >= 9
    # One round trip: the settings travel with the search, in no transaction of its own.
    [search] = [query["sql"] for query in sent if "ORDER BY" in query["sql"]]
    assert "hnsw.iterative_scan" in search
    assert not any(query["sql"].strip().upper() in ("BEGIN", "COMMIT") for query in sent)
    # They lasted for that message alone.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('hnsw.ef_search'), "
                       "current_setting('hnsw.iterative_scan')")
        assert cursor.fetchone() == ("40", "off")  # pgvector's defaults
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE


def test_a_workspace_holding_much_of_the_index_walks_it_and_a_small_one_is_scanned(
        alice: User, bob: User, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(4):
        indexed(alice.personal_workspace, alice, f"Note {n}", f"Deploy note number {n}.")
    indexed(bob.personal_workspace, bob, "Bob", "Bob's only note.")
    space = active_space()
    assert space is not None
    # As at scale, with a few vectors standing for thousands.
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_VECTORS", 2)
    mine, theirs = [alice.personal_workspace.pk], [bob.personal_workspace.pk]
    # A space gets its index once it outgrows exact scans; until then it is scanned.
    assert not space.indexed
    assert selectors._vector_plan(space, mine, 10)[0] is True
    embedding_space_index_ready(space)
    assert space.indexed
    assert selectors._vector_plan(space, mine, 10)[0] is False  # 4 vectors, 80%: the index
    assert selectors._vector_plan(space, theirs, 10)[0] is True  # 1 vector: scanned
    # A small share of the index is scanned, however many vectors it is.
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_FRACTION", 0.9)
    assert selectors._vector_plan(space, mine, 10)[0] is True
