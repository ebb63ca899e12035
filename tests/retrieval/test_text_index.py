"""The text index: new postings, merged lists and dropped chunks rank as one, exactly."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.db import connection, connections, transaction

from aistack.accounts.models import Workspace
from aistack.documents.models import Document
from aistack.retrieval import postings, textrank, topk
from aistack.retrieval.chunking import ChunkSpec
from aistack.retrieval.index import IndexedDocument, chunks_delete, chunks_replace
from aistack.retrieval.models import DroppedChunk, Posting, PostingList
from aistack.retrieval.postings import (
    MERGE_AFTER_POSTINGS,
    posting_lists_merge,
    posting_lists_merge_due,
)
from aistack.retrieval.tasks import merge_postings
from aistack.retrieval.textrank import text_ranking
from tests.retrieval.helpers import bm25_reference

# A Zipfian vocabulary: a few words in most chunks, most words in a few.
VOCABULARY = [f"w{n}q" for n in range(300)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


def random_text(rng: random.Random) -> str:
    return " ".join(rng.choices(VOCABULARY, WEIGHTS, k=rng.randint(3, 50)))


def document_write(document: Document, texts: list[str]) -> None:
    """(Re)write a document's chunks through the index's own write path (no vectors)."""
    specs = [ChunkSpec(ordinal=i, text=text, token_count=len(text.split()), start_char=0,
                       end_char=len(text), content_hash=str(i))
             for i, text in enumerate(texts)]
    chunks_replace(items=[IndexedDocument(document_id=document.pk,
                                          workspace_id=document.workspace_id, specs=specs,
                                          inputs=texts, vectors={})])


def documents_write(workspace: Workspace, rng: random.Random, count: int) -> list[Document]:
    created = Document.objects.bulk_create(
        Document(workspace=workspace, title=f"d{n}", content="", content_hash="")
        for n in range(count))
    for document in created:
        document_write(document, [random_text(rng) for _ in range(rng.randint(1, 3))])
    return created


def merged_workspace(workspace: Workspace, *, seed: int, documents: int) -> random.Random:
    """Write random documents into the workspace and merge them; return the generator."""
    rng = random.Random(seed)
    documents_write(workspace, rng, documents)
    posting_lists_merge(workspace_id=workspace.pk)
    return rng


@pytest.fixture(params=["numpy", "compiled"])
def ranker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Rank in numpy, or with the compiled ranking that large searches load."""
    # As it was before, afterwards; not loaded meanwhile unless asked.
    monkeypatch.setattr(topk, "_kernel", None)
    monkeypatch.setattr(topk, "_started", True)
    if request.param == "compiled":
        assert topk.load()
    return str(request.param)


def reference(workspaces: list[int], query: str, k: int) -> list[tuple[int, float]]:
    """The best k of BM25 computed in Python from the chunks' own stored terms."""
    scores = bm25_reference(query, workspaces)
    return sorted(scores.items(), key=lambda item: (-round(item[1], 9), item[0]))[:k]


def ranking(workspaces: list[int], query: str, k: int) -> list[tuple[int, float]]:
    return text_ranking(workspace_ids=workspaces, query=query, depth=k)


def same(ours: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    return [c for c, _ in ours] == [c for c, _ in expected] and all(
        math.isclose(a, b, abs_tol=1e-8) for (_, a), (_, b) in zip(ours, expected, strict=True))


def assert_ranks_as_reference(workspaces: list[int], rng: random.Random) -> None:
    for _ in range(25):
        query = " ".join(rng.choices(VOCABULARY, WEIGHTS, k=rng.randint(1, 6)))
        k = rng.choice([1, 5, 10, 100])
        assert same(ranking(workspaces, query, k), reference(workspaces, query, k)), query


def test_new_merged_edited_and_deleted_postings_rank_exactly_as_bm25(alice: User, bob: User,
                                                                     ranker: str) -> None:
    rng = random.Random(11)
    mine, theirs = alice.personal_workspace, bob.personal_workspace
    documents = documents_write(mine, rng, 150)
    documents_write(theirs, rng, 40)
    both = [mine.pk, theirs.pk]
    # All new postings, not yet merged.
    assert PostingList.objects.count() == 0
    assert_ranks_as_reference([mine.pk], rng)
    assert_ranks_as_reference(both, rng)

    result = posting_lists_merge(workspace_id=mine.pk)
    assert result.merged_postings > 1000
    assert not Posting.objects.filter(workspace_id=mine.pk).exists()
    assert Posting.objects.filter(workspace_id=theirs.pk).exists()
    assert_ranks_as_reference([mine.pk], rng)
    assert_ranks_as_reference(both, rng)  # one merged workspace, one not

    # Edits and deletes after the merge: new postings and dropped chunks over the lists.
    for document in documents[:30]:
        document_write(document, [random_text(rng)])
    chunks_delete(document_ids=[d.pk for d in documents[30:60]])
    Document.objects.filter(pk__in=[d.pk for d in documents[60:70]]).delete()  # cascade
    assert DroppedChunk.objects.filter(workspace_id=mine.pk).count() >= 70
    assert_ranks_as_reference([mine.pk], rng)
    assert_ranks_as_reference(both, rng)

    posting_lists_merge(workspace_id=mine.pk)
    assert not DroppedChunk.objects.filter(workspace_id=mine.pk).exists()
    assert_ranks_as_reference([mine.pk], rng)
    # The lists hold exactly the live chunks' postings.
    live = set(mine.chunks.values_list("id", flat=True))
    listed = {chunk_id for (chunk_id,) in _listed_chunks(mine.pk)}
    assert listed == live


def test_a_process_with_little_memory_for_lists_ranks_the_same(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = alice.personal_workspace
    rng = merged_workspace(workspace, seed=12, documents=100)
    # Room for a few short lists: most are read every time, some come from memory.
    monkeypatch.setattr(textrank, "lists", textrank.ListCache(budget=3_000))
    assert_ranks_as_reference([workspace.pk], rng)
    assert 0 < textrank.lists._bytes <= 3_000


def test_long_lists_looked_up_rather_than_summed_rank_the_same(
    alice: User, monkeypatch: pytest.MonkeyPatch, ranker: str
) -> None:
    workspace = alice.personal_workspace
    rng = merged_workspace(workspace, seed=13, documents=150)
    documents_write(workspace, rng, 10)  # and some new postings
    # Every list long: the common words' lists are looked up for the rare words' chunks.
    monkeypatch.setattr(textrank, "_SHORT_LIST", 0)
    looked_up = []
    add_to = textrank._Part.add_to

    def counted(part: textrank._Part, *args: Any) -> None:
        looked_up.append(part)
        add_to(part, *args)

    monkeypatch.setattr(textrank._Part, "add_to", counted)
    for _ in range(40):
        rare = rng.choice(VOCABULARY[100:])
        common = " ".join(rng.choices(VOCABULARY[:8], k=rng.randint(1, 4)))
        query = f"{rare} {common}"
        k = rng.choice([1, 3, 10])
        assert same(ranking([workspace.pk], query, k),
                    reference([workspace.pk], query, k)), query
    assert bool(looked_up) == (ranker == "numpy")


def _listed_chunks(workspace_id: int) -> list[tuple[int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ('x' || encode(substring(chunk_ids FROM i * 8 + 1 FOR 8), "
            "'hex'))::bit(64)::int8 FROM retrieval_postinglist, "
            "generate_series(0, postings - 1) i WHERE workspace_id = %s", [workspace_id])
        return cursor.fetchall()


def test_a_deleted_workspace_leaves_nothing_after_its_merge(alice: User) -> None:
    rng = random.Random(2)
    workspace = Workspace.objects.create(name="gone", slug="gone")
    documents_write(workspace, rng, 20)
    posting_lists_merge(workspace_id=workspace.pk)
    assert PostingList.objects.filter(workspace_id=workspace.pk).exists()
    workspace_id = workspace.pk
    workspace.delete()

    assert DroppedChunk.objects.filter(workspace_id=workspace_id).count() >= 20
    assert text_ranking(workspace_ids=[workspace_id], query=VOCABULARY[0], depth=10) == []
    posting_lists_merge(workspace_id=workspace_id)
    assert not PostingList.objects.filter(workspace_id=workspace_id).exists()
    assert not DroppedChunk.objects.filter(workspace_id=workspace_id).exists()


def test_only_workspaces_with_enough_new_postings_are_merged_when_due(alice: User,
                                                                      bob: User) -> None:
    rng = random.Random(4)
    big, small = alice.personal_workspace, bob.personal_workspace
    while Posting.objects.filter(workspace_id=big.pk).count() < MERGE_AFTER_POSTINGS:
        documents_write(big, rng, 50)
    documents_write(small, rng, 2)

    assert posting_lists_merge_due() == 1
    assert not Posting.objects.filter(workspace_id=big.pk).exists()
    assert Posting.objects.filter(workspace_id=small.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_merge_leaves_no_deleted_rows_behind_for_searches_to_read() -> None:
    rng = random.Random(12)
    workspace = Workspace.objects.create(name="w", slug="w")
    documents = documents_write(workspace, rng, 80)
    chunks_delete(document_ids=[document.pk for document in documents[:10]])
    queries = ("w0q w7q", "w3q w150q w299q")
    expected = [reference([workspace.pk], query, 10) for query in queries]

    postings.posting_lists_merge_all(workspace_ids=[workspace.pk])

    # A search reads a term's new postings by bitmap scan, which takes every row its
    # index names, dead or alive: vacuumed, the index names none.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM retrieval_posting "
                       "WHERE lexeme = 'w0q' AND workspace_id = %s", [workspace.pk])
        [plan] = cursor.fetchone()[0]
    index_scan = plan["Plan"]["Plans"][0]
    assert index_scan["Node Type"] == "Bitmap Index Scan"
    assert index_scan["Actual Rows"] == 0
    assert all(same(ranking([workspace.pk], query, 10), wanted)
               for query, wanted in zip(queries, expected, strict=True))


@pytest.mark.django_db(transaction=True)
def test_a_merge_killed_midway_changes_nothing_and_the_next_one_completes(
    celery_worker: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(9)
    workspace = Workspace.objects.create(name="w", slug="w")
    documents_write(workspace, rng, 80)
    posting_lists_merge(workspace_id=workspace.pk)
    documents_write(workspace, rng, 40)
    queries = [" ".join(rng.choices(VOCABULARY, WEIGHTS, k=3)) for _ in range(10)]
    before = [ranking([workspace.pk], query, 10) for query in queries]
    postings_before = Posting.objects.count()

    # Another session holds a list row, so the merge blocks in the middle of its writes;
    # then its connection is killed, as a crashed worker's would be.
    blocker = connections.create_connection("default")
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute("SELECT 1 FROM retrieval_postinglist WHERE workspace_id = %s "
                       "FOR UPDATE", [workspace.pk])
    failure: list[BaseException] = []

    def merge() -> None:
        try:
            posting_lists_merge(workspace_id=workspace.pk)
        except BaseException as exc:  # the killed connection's error
            failure.append(exc)
        finally:
            connections.close_all()

    merging = threading.Thread(target=merge)
    merging.start()
    with connection.cursor() as cursor:
        for _ in range(100):
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query LIKE '%%retrieval_postinglist%%'")
            if waiting := cursor.fetchall():
                break
            threading.Event().wait(0.05)
        assert waiting, "the merge never reached its writes"
        cursor.execute("SELECT pg_terminate_backend(%s)", [waiting[0][0]])
    merging.join(10)
    blocker.rollback()
    blocker.close()

    assert failure
    assert Posting.objects.count() == postings_before
    assert [ranking([workspace.pk], query, 10) for query in queries] == before
    # The scheduled merge, on a real worker (a thread of this process), completes it.
    monkeypatch.setattr(postings, "MERGE_AFTER_POSTINGS", 1)
    merge_postings.delay()
    for _ in range(300):
        if not Posting.objects.exists():
            break
        time.sleep(0.1)
    assert not Posting.objects.exists()
    assert [ranking([workspace.pk], query, 10) for query in queries] == before
    assert all(same(ours, reference([workspace.pk], query, 10))
               for ours, query in zip(before, queries, strict=True))


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_packs_existing_postings_into_lists_and_back() -> None:
    from django.db.migrations.executor import MigrationExecutor

    rng = random.Random(8)
    workspace = Workspace.objects.create(name="w", slug="w")
    documents_write(workspace, rng, 60)
    queries = [" ".join(rng.choices(VOCABULARY, WEIGHTS, k=3)) for _ in range(10)]
    expected = [reference([workspace.pk], query, 10) for query in queries]
    with connection.cursor() as cursor:
        cursor.execute("SELECT lexeme, workspace_id, chunk_id, tf, length "
                       "FROM retrieval_posting ORDER BY 1, 2, 3")
        rows = cursor.fetchall()
    posting_lists_merge(workspace_id=workspace.pk)
    assert not Posting.objects.exists()
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("retrieval")
    try:
        # Back to before the lists: the postings are unpacked, exactly as they were.
        MigrationExecutor(connection).migrate([("retrieval", "0004_workspace_statistics")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT lexeme, workspace_id, chunk_id, tf, length "
                           "FROM retrieval_posting ORDER BY 1, 2, 3")
            assert cursor.fetchall() == rows
    finally:
        MigrationExecutor(connection).migrate(latest)
    # And forward again: every posting in its list, none left as a row.
    assert not Posting.objects.exists()
    assert PostingList.objects.filter(workspace_id=workspace.pk).exists()
    assert all(same(ranking([workspace.pk], query, 10), ranked)
               for query, ranked in zip(queries, expected, strict=True))


def test_a_repeated_search_reads_no_list_again_and_a_misnamed_one_is_still_ranked(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = alice.personal_workspace
    document = Document.objects.create(workspace=workspace, title="Runs", content="",
                                       content_hash="")
    document_write(document, ["The runners were running deployments quickly",
                              "Deployment runbooks for quick runs"] * 5)
    posting_lists_merge(workspace_id=workspace.pk)
    monkeypatch.setattr(textrank, "lists", textrank.ListCache(budget=1 << 20))
    named: list[list[str]] = []
    statements: list[str] = []

    def cached_keys(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        if sql == textrank._READ_SQL:
            named.append(params["cached"])
        return execute(sql, params, many, context)

    query = "Running deployments, quickly"
    with connection.execute_wrapper(cached_keys):
        first = ranking([workspace.pk], query, 5)
        second = ranking([workspace.pk], query, 5)
    assert first == second and first
    assert statements == [textrank._READ_SQL] * 2  # one round trip a search
    # The first read every list; the second named them all as held: none sent again.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM retrieval_postinglist WHERE workspace_id = %s "
                       "AND lexeme IN (SELECT lexeme FROM unnest(to_tsvector('english', %s)))",
                       [workspace.pk, query])
        (terms,) = cursor.fetchone()
    assert named[0] == [] and len(named[1]) == terms == 3

    # A held list this process names by another stem than PostgreSQL's is sent again.
    monkeypatch.setattr(textrank, "text_stems", lambda text: {"runn", "deploi"})
    named.clear()
    with connection.execute_wrapper(cached_keys):
        assert ranking([workspace.pk], query, 5) == first
    assert named == [[]]


def random_part(rng: np.random.Generator, *, size: int, span: int, tfs: int,
                lengths: list[int], weight: float, avgdl: float) -> textrank._Part:
    """A term's list of up to ``size`` chunks below ``span``, with few distinct term
    frequencies (below ``tfs``) and lengths: many ties."""
    ids = np.unique(rng.integers(0, span, size)).astype(np.int64)
    listed = postings.Postings(ids, rng.integers(1, tfs, ids.size).astype(np.int16),
                               rng.choice(lengths, ids.size).astype(np.int32))
    return textrank._Part(listed, weight, avgdl, weight * textrank._peak(listed, avgdl))


@pytest.mark.parametrize("short_list", [0, 50, textrank._SHORT_LIST])
def test_maxscore_keeps_exactly_the_best_of_a_brute_force_sum(
    short_list: int, monkeypatch: pytest.MonkeyPatch, ranker: str
) -> None:
    # Lists of every length, many ties (few distinct term frequencies and lengths, and
    # lists repeated under another weight), against the sum of every posting's score.
    monkeypatch.setattr(textrank, "_SHORT_LIST", short_list)
    rng = np.random.default_rng(5)
    avgdl = 20.0
    for trial in range(40):
        parts, expected = [], {}
        for _ in range(rng.integers(1, 9)):
            weight = float(rng.choice([0.5, 1.0, 2.5]))
            part = random_part(rng, size=int(rng.choice([1, 5, 40, 300, 3_000])), span=5_000,
                               tfs=3, lengths=[10, 20, 40], weight=weight, avgdl=avgdl)
            parts.append(part)
            listed, ids = part.postings, part.chunk_ids
            scores = textrank._scores(weight, listed.tfs, listed.lengths, avgdl)
            for chunk_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
                expected[chunk_id] = expected.get(chunk_id, 0.0) + score
        depth = int(rng.choice([1, 10, 100]))
        best = sorted(((c, round(s, textrank.SCORE_DECIMALS)) for c, s in expected.items()),
                      key=lambda item: (-item[1], item[0]))[:depth]
        ours = textrank._best(parts, depth)
        assert [c for c, _ in ours] == [c for c, _ in best], trial
        assert all(math.isclose(a, b, abs_tol=1e-9)
                   for (_, a), (_, b) in zip(ours, best, strict=True))


def test_the_compiled_ranking_keeps_exactly_what_numpy_keeps_over_wide_sparse_lists() -> None:
    # Ids spread over a million (windows far apart, most of them empty), up to 20 lists
    # of up to 50,000 postings, and ties.
    assert topk.load()
    rng = np.random.default_rng(8)
    for trial in range(30):
        avgdl = float(rng.choice([12.0, 37.5]))
        parts = []
        for _ in range(rng.integers(1, 21)):
            parts.append(random_part(
                rng, size=int(rng.choice([1, 30, 2_000, 50_000])), span=1_000_000, tfs=4,
                lengths=[5, 30, 90], weight=float(rng.choice([0.2, 1.0, 4.0])), avgdl=avgdl))
        depth = int(rng.choice([1, 10, 30, 300]))
        compiled = textrank._best(parts, depth)
        assert compiled == textrank._best_numpy(parts, depth), trial


def test_a_search_that_reads_many_postings_loads_the_compiled_ranking_beside_it(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topk, "_kernel", None)
    monkeypatch.setattr(topk, "_started", False)
    workspace = alice.personal_workspace
    rng = merged_workspace(workspace, seed=14, documents=40)
    common = " ".join(VOCABULARY[:5])
    monkeypatch.setattr(topk, "LOAD_AT_POSTINGS", 10**9)
    first = ranking([workspace.pk], common, 10)
    assert not topk._started  # too small a search
    monkeypatch.setattr(topk, "LOAD_AT_POSTINGS", 50)
    assert ranking([workspace.pk], common, 10) == first  # the same, loaded or not yet
    deadline = time.monotonic() + 60
    while not topk.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert topk.ready()
    assert same(ranking([workspace.pk], common, 10), first)
    assert same(first, reference([workspace.pk], common, 10))
    assert_ranks_as_reference([workspace.pk], rng)


def test_both_rankings_add_a_chunks_terms_to_the_same_last_bit_whatever_their_order() -> None:
    # Chunk 7's three terms sum to a hair's breadth of a rounding edge: added in numpy's
    # order (the statement's rows) and the compiled ranking's (lowest bound first), the
    # unrounded sums differed in their last bit and rounded apart, and chunk 8 (alone, the
    # same score once rounded) won or lost the tie depending on the ranking.
    assert topk.load()

    def alone(chunk_id: int, weight: float) -> textrank._Part:
        listed = postings.Postings(np.array([chunk_id], dtype=np.int64),
                                   np.ones(1, dtype=np.int16), np.ones(1, dtype=np.int32))
        return textrank._Part(listed, weight, 1.0, weight * textrank._peak(listed, 1.0))

    parts = [alone(7, weight) for weight in (2.999999999943834, 1.9504636963259352,
                                             0.5606394622302311)]
    parts.append(alone(8, 5.511103159))
    for depth in (1, 2):
        assert textrank._best(parts, depth) == textrank._best_numpy(parts, depth)
    assert textrank._best(parts[:3], 1) == textrank._best_numpy(parts[:3], 1)
