"""Benchmark retrieval: search latency and HNSW recall at scale, and ingest throughput.

    python bench/retrieval.py [--chunks 100000] [--dataset ../shared/data/scifact]

Search: a corpus of N chunks in two workspaces (99% and 1%). Vectors are real MiniLM
embeddings of SciFact passages, mixed pairwise with noise to reach N while keeping
the clustered shape of real embeddings; chunk texts are SciFact passages, so BM25
has real term statistics. Queries are SciFact's test claims. Recall@10 of each mode
is measured against exact (brute-force) vector search on the same workspace.

Tantivy: the same chunk texts and queries, indexed and searched by the `tantivy`
package in the same run (text search's goal is its p95), and each ratio printed.

Ingest: the same SciFact documents through the whole pipeline (import, chunk, embed,
store, index) against sentence-transformers encoding exactly the pipeline's texts
directly, measured alternately in one run; the ratio is what the goal is set on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pgvector.psycopg import register_vector

from common import bench_arguments, django_on_embedded_services, median, percentile

K = 10


def load_scifact(directory: Path) -> tuple[list[tuple[str, str]], list[str]]:
    corpus = [json.loads(line) for line in (directory / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (directory / "queries.jsonl").open()]
    return [(row["title"], row["text"]) for row in corpus], queries


def kept_corpus(n: int) -> dict[str, int] | None:
    """Return the workspaces of a corpus of n chunks an earlier run built, if there is one."""
    from aistack.accounts.models import Workspace
    from aistack.retrieval.models import Chunk

    workspaces = {w.name: w.pk for w in Workspace.objects.filter(slug__startswith="bench-")
                  if w.name in {"big", "small"}}
    if len(workspaces) == 2 and Chunk.objects.filter(
            workspace_id__in=workspaces.values()).count() == n:
        print(f"\nreusing the {n:,} chunks built by an earlier run")
        return workspaces
    if workspaces:
        raise SystemExit(f"--home holds a corpus of another size; {n:,} chunks asked for")
    return None


def build_corpus(n: int, documents: list[tuple[str, str]]) -> dict[str, int]:
    """Insert n chunks with vectors into a big and a small workspace; return their ids."""
    print(f"\nbuilding {n:,} chunks")
    build_started = time.perf_counter()
    from django.db import connection

    from aistack.accounts.models import Workspace
    from aistack.ai.services import embeddings_create
    from aistack.retrieval.embedding import embedding_input
    from aistack.retrieval.spaces import embedding_space_for_configured_model
    from aistack.usage.types import Attribution

    space = embedding_space_for_configured_model()
    base_texts = [text for _, text in documents]
    started = time.perf_counter()
    base = np.array(embeddings_create(
        texts=[embedding_input(title=t, text=x) for t, x in documents],
        attribution=Attribution(feature="bench")).vectors, dtype=np.float32)
    print(f"  embedded {len(base)} real passages in {time.perf_counter() - started:.0f}s")
    big = Workspace.objects.create(name="big", slug="bench-big")
    small = Workspace.objects.create(name="small", slug="bench-small")
    ours = [big.pk, small.pk]
    nprng = np.random.default_rng(7)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute(f"DROP INDEX IF EXISTS chunkvector_hnsw_{space.pk}")
        # Each passage's stemmed terms once; every chunk drawn from it copies them.
        cursor.execute("CREATE TEMPORARY TABLE bench_text AS SELECT i - 1 AS i, t AS text, "
                       "to_tsvector('english', t) AS terms FROM unnest(%s::text[]) "
                       "WITH ORDINALITY AS x(t, i)", [base_texts])
        cursor.execute("SELECT i, (SELECT coalesce(sum(cardinality(u.positions)), 0) "
                       "FROM unnest(terms) u), "
                       "(SELECT coalesce(array_agg(u.lexeme), '{}') FROM unnest(terms) u), "
                       "(SELECT coalesce(array_agg(cardinality(u.positions)), '{}') "
                       "FROM unnest(terms) u) FROM bench_text ORDER BY i")
        passages = cursor.fetchall()
    lengths = np.array([length for _, length, _, _ in passages], dtype=np.int64)
    drawn = np.empty(n, dtype=np.int64)
    chunk_ids = np.empty(n, dtype=np.int64)
    workspace_of = np.where(np.arange(n) % 100 == 0, small.pk, big.pk)
    raw = connection.connection  # psycopg's own, for a binary COPY of the vectors
    register_vector(raw)
    for start in range(0, n, 20_000):
        size = min(20_000, n - start)
        a, b = nprng.integers(0, len(base), size), nprng.integers(0, len(base), size)
        mix = nprng.uniform(0.6, 1.0, (size, 1)).astype(np.float32)
        vectors = base[a] * mix + base[b] * (1 - mix)
        vectors += nprng.normal(0, 0.02, vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        workspaces = workspace_of[start:start + size]
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO documents_document (workspace_id, title, content, content_hash, "
                "source_file, source_name, source_kind, created_at, updated_at, "
                "embedding_status, embedding_error, summary_status, summary_error, summary, "
                "summary_version, summary_extractive) "
                "SELECT w, 'bench', t.text, '', '', '', '', now(), now(), 'ready', '', "
                "'pending', '', '', '', false "
                "FROM unnest(%s::bigint[], %s::int[]) WITH ORDINALITY AS r(w, i, n) "
                "JOIN bench_text t ON t.i = r.i ORDER BY r.n RETURNING id",
                [workspaces.tolist(), a.tolist()])
            document_ids = sorted(row[0] for row in cursor.fetchall())
            cursor.execute(
                "INSERT INTO retrieval_chunk (document_id, workspace_id, ordinal, text, "
                "token_count, start_char, end_char, content_hash, search_vector, term_count, "
                "created_at) "
                "SELECT r.d, r.w, 0, t.text, 1, 0, length(t.text), '', t.terms, "
                "(%s::int[])[r.i + 1], "
                "now() FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) "
                "WITH ORDINALITY AS r(d, w, i, n) JOIN bench_text t ON t.i = r.i "
                "ORDER BY r.n RETURNING id",
                [lengths.tolist(), document_ids, workspaces.tolist(), a.tolist()])
            ids = np.array(sorted(row[0] for row in cursor.fetchall()), dtype=np.int64)
        chunk_ids[start:start + size] = ids
        drawn[start:start + size] = a
        with raw.cursor() as cursor, cursor.copy(
                "COPY retrieval_chunkvector (chunk_id, space_id, workspace_id, input_hash, "
                "embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "int8", "text", "vector"])
            for chunk_id, workspace_id, vector in zip(ids.tolist(), workspaces.tolist(),
                                                      vectors, strict=True):
                copy.write_row([chunk_id, space.pk, workspace_id, "", vector])
    print(f"  wrote {n:,} documents, chunks and vectors in "
          f"{time.perf_counter() - started:.0f}s")
    started = time.perf_counter()
    # The text index as merges leave it (retrieval.postings): one packed list per term
    # and workspace, built here from which passage each chunk copies.
    lists_write(passages, drawn, chunk_ids, workspace_of, lengths)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO retrieval_workspaceterm (workspace_id, lexeme, df) "
            "SELECT workspace_id, lexeme, postings FROM retrieval_postinglist "
            "WHERE workspace_id = ANY(%s) "
            "ON CONFLICT (workspace_id, lexeme) DO UPDATE SET df = EXCLUDED.df", [ours])
        cursor.execute(
            "INSERT INTO retrieval_workspacecorpus (workspace_id, chunks, length) "
            "SELECT workspace_id, count(*), sum(term_count) FROM retrieval_chunk "
            "WHERE workspace_id = ANY(%s) GROUP BY 1 "
            "ON CONFLICT (workspace_id) DO UPDATE SET chunks = EXCLUDED.chunks, "
            "length = EXCLUDED.length", [ours])
    print(f"  built the text index in {time.perf_counter() - started:.0f}s")
    started = time.perf_counter()
    from aistack.retrieval.spaces import embedding_space_index_create, embedding_space_index_ready

    embedding_space_index_create(space=space)
    embedding_space_index_ready(space)  # recorded built
    with connection.cursor() as cursor:
        # What autovacuum does soon after a bulk load: the visibility map lets text search
        # read its postings from the index alone.
        cursor.execute("VACUUM ANALYZE")
    print(f"  built the HNSW index over {n:,} vectors in {time.perf_counter() - started:.0f}s")
    print(f"  built the corpus in {time.perf_counter() - build_started:.0f}s")
    return {"big": big.pk, "small": small.pk}


def lists_write(passages: list[tuple[int, int, list[str], list[int]]], drawn: np.ndarray,
                chunk_ids: np.ndarray, workspace_of: np.ndarray, lengths: np.ndarray) -> None:
    """Write every term's posting list in each workspace, packed as merges pack them."""
    from collections import defaultdict

    from django.db import connection

    from aistack.retrieval.postings import Postings

    chunks_of: dict[tuple[int, int], np.ndarray] = {}
    order = np.lexsort((chunk_ids, drawn, workspace_of))
    keys = np.stack([workspace_of[order], drawn[order]], axis=1)
    starts = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    for group in np.split(order, starts):
        chunks_of[int(workspace_of[group[0]]), int(drawn[group[0]])] = chunk_ids[group]
    # For each workspace and term: the passages holding it, with the term's frequency.
    holders: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for (workspace_id, passage) in chunks_of:
        _, _, terms, tfs = passages[passage]
        for lexeme, tf in zip(terms, tfs, strict=True):
            holders[workspace_id, lexeme].append((passage, tf))
    batch: list[tuple[int, str, Postings]] = []
    batched = 0  # postings in the batch

    def flush() -> None:
        with connection.cursor() as cursor:
            packed = [(w, lexeme, *p.pack(), p.chunk_ids.size) for w, lexeme, p in batch]
            cursor.execute(
                "INSERT INTO retrieval_postinglist "
                "(workspace_id, lexeme, chunk_ids, tfs, lengths, postings) "
                "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bytea[], %s::bytea[], "
                "%s::bytea[], %s::int[])", [list(column) for column in zip(*packed,
                                                                            strict=True)])
        batch.clear()
        nonlocal batched
        batched = 0

    for (workspace_id, lexeme), found in holders.items():
        ids = np.concatenate([chunks_of[workspace_id, p] for p, _ in found])
        tfs = np.concatenate([np.full(chunks_of[workspace_id, p].size, tf)
                              for p, tf in found])
        lens = np.concatenate([np.full(chunks_of[workspace_id, p].size, lengths[p])
                               for p, _ in found])
        order = np.argsort(ids)
        batch.append((workspace_id, lexeme, Postings(ids[order], tfs[order].astype(np.int16),
                                                     lens[order].astype(np.int32))))
        batched += ids.size
        if batched >= 2_000_000 or len(batch) >= 2_000:
            flush()
    if batch:
        flush()


def bench_search(n: int, workspaces: dict[str, int], queries: list[str]
                 ) -> dict[str, dict[str, Any]]:
    from aistack.retrieval.embedding import query_vectors_warm
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search
    from aistack.usage.types import Attribution

    attribution = Attribution(feature="bench")
    query_vectors_warm(queries=queries, attribution=attribution)
    print(f"\nsearch over {n:,} chunks, k={K}, {len(queries)} queries "
          "(query vectors cached: this is retrieval time)")
    print(f"  {'workspace':<10} {'mode':<22} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'results':>8} {'recall@10 vs exact':>19}")
    figures: dict[str, dict[str, Any]] = {}
    for name, workspace_id in workspaces.items():
        exact = {}
        for query in queries:
            exact[query] = [h.chunk_id for h in search(
                workspace_ids=[workspace_id], query=query, k=K, mode=SearchMode.VECTOR,
                attribution=attribution, exact=True, snippets=False)]
        runs = [("vector, exact scan", SearchMode.VECTOR, True),
                ("vector, planned", SearchMode.VECTOR, None),
                ("vector, HNSW forced", SearchMode.VECTOR, False),
                ("text (BM25)", SearchMode.TEXT, None),
                ("hybrid (RRF)", SearchMode.HYBRID, None)]
        for label, mode, force in runs:
            # One pass untimed, as a serving process has its lists and pages in memory
            # (and Tantivy's index is in the page cache from being written).
            for query in queries:
                search(workspace_ids=[workspace_id], query=query, k=K, mode=mode,
                       attribution=attribution, exact=force, snippets=True)
            latencies, recalls, counts = [], [], []
            for query in queries:
                started = time.perf_counter()
                hits = search(workspace_ids=[workspace_id], query=query, k=K, mode=mode,
                              attribution=attribution, exact=force, snippets=True)
                latencies.append((time.perf_counter() - started) * 1000)
                counts.append(len(hits))
                if mode == SearchMode.VECTOR:
                    # Of the nearest K, or of all there are when the workspace holds fewer.
                    recalls.append(len({h.chunk_id for h in hits} & set(exact[query]))
                                   / max(1, len(exact[query])))
            recall = f"{sum(recalls) / len(recalls):.3f}" if recalls else "-"
            print(f"  {name:<10} {label:<22} {median(latencies):8.1f} "
                  f"{percentile(latencies, 0.95):8.1f} {sum(counts) / len(counts):8.1f} "
                  f"{recall:>19}")
            figure: dict[str, Any] = {"p50_ms": round(median(latencies), 2),
                                      "p95_ms": round(percentile(latencies, 0.95), 2)}
            if recalls:
                figure["recall_at_10"] = round(sum(recalls) / len(recalls), 4)
                figure["full_k"] = min(counts) == K
            figures.setdefault(name, {})[label] = figure
    return figures


def bench_compiled_ranking(workspace_id: int, queries: list[str]) -> dict[str, Any]:
    """The text ranking alone (a search's, at the depth of hybrid's fusion), in numpy and
    compiled, query by query in turns: the same chunks, and how long each took."""
    from aistack.retrieval import topk
    from aistack.retrieval.selectors import FUSION_DEPTH
    from aistack.retrieval.textrank import text_ranking

    if not topk.load():
        return {}
    kernel = topk._kernel
    latencies: dict[str, list[float]] = {"numpy": [], "compiled": []}
    differ = 0
    try:
        for query in queries:  # the lists in memory, as a serving process has them
            text_ranking(workspace_ids=[workspace_id], query=query, depth=FUSION_DEPTH)
        for n, query in enumerate(queries):
            ranked = []
            # Each first in turn: neither always finds the other's work in the caches.
            for kind in (["numpy", "compiled"] if n % 2 else ["compiled", "numpy"]):
                topk._kernel = kernel if kind == "compiled" else None
                started = time.perf_counter()
                ranked.append(text_ranking(workspace_ids=[workspace_id], query=query,
                                           depth=FUSION_DEPTH))
                latencies[kind].append((time.perf_counter() - started) * 1000)
            differ += ranked[0] != ranked[1]
    finally:
        topk._kernel = kernel
    figures = {kind: {"p50_ms": round(median(values), 2),
                      "p95_ms": round(percentile(values, 0.95), 2)}
               for kind, values in latencies.items()}
    print(f"\ntext ranking alone (depth {FUSION_DEPTH}), big workspace, in turns: "
          f"numpy p50 {figures['numpy']['p50_ms']:.2f} p95 {figures['numpy']['p95_ms']:.2f} ms, "
          f"compiled p50 {figures['compiled']['p50_ms']:.2f} "
          f"p95 {figures['compiled']['p95_ms']:.2f} ms; "
          f"{len(queries) - differ} of {len(queries)} rankings the same")
    return {**figures, "same_rankings": len(queries) - differ}


def hnsw_graph_ensure(graph: tuple[int, int] | None) -> str:
    """Rebuild the HNSW index with (m, ef_construction) if it was built otherwise; return
    how it is built."""
    from django.db import connection

    from aistack.retrieval.selectors import active_space
    from aistack.retrieval.spaces import (
        HNSW_EF_CONSTRUCTION,
        HNSW_M,
        embedding_space_index_create,
        embedding_space_index_ready,
    )

    space = active_space()
    assert space is not None
    m, ef_construction = graph or (HNSW_M, HNSW_EF_CONSTRUCTION)
    wanted = f"m={m}, ef_construction={ef_construction}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                       [f"chunkvector_hnsw_{space.pk}"])
        found = cursor.fetchone()
        # As PostgreSQL prints it back.
        if found is not None and f"WITH (m='{m}', ef_construction='{ef_construction}')" \
                in found[0]:
            return wanted
        print(f"\nbuilding the HNSW index ({wanted})")
        started = time.perf_counter()
        cursor.execute(f"DROP INDEX IF EXISTS chunkvector_hnsw_{space.pk}")
        cursor.execute("SET maintenance_work_mem = '2GB'")
    embedding_space_index_create(space=space, m=m, ef_construction=ef_construction)
    embedding_space_index_ready(space)  # recorded built
    print(f"  built in {time.perf_counter() - started:.0f}s")
    return wanted


def bench_ef_sweep(workspace_id: int, queries: list[str], ef_values: list[int]
                   ) -> dict[str, dict[str, float]]:
    """Recall@10 against exact search, and latency, of the HNSW walk at each ef_search."""
    from aistack.retrieval.embedding import query_vector
    from aistack.retrieval.selectors import active_space, vector_ranking
    from aistack.usage.types import Attribution

    space = active_space()
    assert space is not None
    attribution = Attribution(feature="bench")
    vectors = [query_vector(space=space, query=q, attribution=attribution) for q in queries]
    exact = [{i for i, _ in vector_ranking(space=space, workspace_ids=[workspace_id],
                                           query_vector=v, depth=K, exact=True)}
             for v in vectors]
    print(f"\nHNSW walk, big workspace, k={K}: ef_search, p50 ms, p95 ms, recall@10")
    figures = {}
    for ef in ef_values:
        latencies, recalls = [], []
        for timed in (False, True):
            for vector, nearest in zip(vectors, exact, strict=True):
                started = time.perf_counter()
                found = vector_ranking(space=space, workspace_ids=[workspace_id],
                                       query_vector=vector, depth=K, exact=False,
                                       ef_search=ef)
                if timed:
                    latencies.append((time.perf_counter() - started) * 1000)
                    recalls.append(len({i for i, _ in found} & nearest) / max(1, len(nearest)))
        figures[str(ef)] = {"p50_ms": round(median(latencies), 2),
                            "p95_ms": round(percentile(latencies, 0.95), 2),
                            "recall_at_10": round(sum(recalls) / len(recalls), 4)}
        print(f"  {ef:>6} {median(latencies):8.2f} {percentile(latencies, 0.95):8.2f} "
              f"{sum(recalls) / len(recalls):8.3f}")
    return figures


def bench_sizes(n: int) -> dict[str, float]:
    """Bytes on disk per chunk: the text index, the vectors, and the rest."""
    from django.db import connection

    parts = {
        "text_index": ["retrieval_postinglist", "retrieval_posting", "retrieval_droppedchunk",
                       "retrieval_workspaceterm"],
        "vectors": ["retrieval_chunkvector"],
        "rest": ["retrieval_chunk", "documents_document"],
    }
    sizes = {}
    with connection.cursor() as cursor:
        for part, tables in parts.items():
            cursor.execute("SELECT sum(pg_total_relation_size(t::regclass)) "
                           "FROM unnest(%s::text[]) t", [tables])
            sizes[part] = round(int(cursor.fetchone()[0]) / n)
    print("\non disk, bytes per chunk (tables with their indexes): " + ", ".join(
        f"{part} {size:,}" for part, size in sizes.items()))
    return sizes


def bench_index_build(sample: int, inserts: int) -> dict[str, float]:
    """The HNSW index (aistack's settings) built in bulk over ``sample`` of the corpus's
    vectors, against ``inserts`` more written into it one by one, in a table of their
    own (dropped after)."""
    from django.db import connection

    from aistack.retrieval.selectors import active_space
    from aistack.retrieval.spaces import HNSW_EF_CONSTRUCTION, HNSW_M

    space = active_space()
    assert space is not None
    width = int(space.dimensions)
    figures = {}
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_hnsw, bench_hnsw_more")
        cursor.execute("CREATE TABLE bench_hnsw AS SELECT id, embedding FROM "
                       "retrieval_chunkvector WHERE space_id = %s ORDER BY random() LIMIT %s",
                       [space.pk, sample + inserts])
        cursor.execute("CREATE TABLE bench_hnsw_more AS SELECT * FROM bench_hnsw LIMIT %s",
                       [inserts])
        cursor.execute("DELETE FROM bench_hnsw WHERE id IN (SELECT id FROM bench_hnsw_more)")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        try:
            started = time.perf_counter()
            cursor.execute(
                f"CREATE INDEX ON bench_hnsw USING hnsw ((embedding::halfvec({width})) "
                f"halfvec_cosine_ops) WITH (m = {HNSW_M}, "
                f"ef_construction = {HNSW_EF_CONSTRUCTION})")
            figures["bulk_ms_per_vector"] = (time.perf_counter() - started) * 1000 / sample
            started = time.perf_counter()
            cursor.execute("INSERT INTO bench_hnsw SELECT * FROM bench_hnsw_more")
            figures["insert_ms_per_vector"] = (time.perf_counter() - started) * 1000 / inserts
        finally:
            cursor.execute("DROP TABLE IF EXISTS bench_hnsw, bench_hnsw_more")
    print(f"\nHNSW over {sample:,} of the corpus's vectors: built in bulk "
          f"{figures['bulk_ms_per_vector']:.2f} ms a vector; {inserts:,} more inserted one "
          f"by one {figures['insert_ms_per_vector']:.2f} ms each "
          f"({figures['insert_ms_per_vector'] / figures['bulk_ms_per_vector']:.1f}x)")
    return {"vectors": sample, **{k: round(v, 3) for k, v in figures.items()}}


def bench_concurrent(workspace_id: int, queries: list[str], searchers: int = 4
                     ) -> dict[str, float]:
    """Searches per second with several searchers at once, each on its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search
    from aistack.usage.types import Attribution

    attribution = Attribution(feature="bench")

    def searcher(mode: SearchMode, offset: int) -> int:
        try:
            for query in queries[offset:] + queries[:offset]:
                search(workspace_ids=[workspace_id], query=query, k=K, mode=mode,
                       attribution=attribution, snippets=True)
            return len(queries)
        finally:
            connection.close()

    figures = {}
    for mode in (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID):
        started = time.perf_counter()
        with ThreadPoolExecutor(searchers) as pool:
            done = sum(pool.map(searcher, [mode] * searchers,
                                [i * len(queries) // searchers for i in range(searchers)]))
        figures[mode.value] = round(done / (time.perf_counter() - started), 1)
    print(f"\n{searchers} searchers at once, big workspace, searches per second: "
          + ", ".join(f"{mode} {qps}" for mode, qps in figures.items()))
    return figures


def bench_tantivy(workspaces: dict[str, int], queries: list[str]) -> dict[str, dict[str, Any]]:
    """The same texts and queries in Tantivy, a Lucene-class engine (block-max WAND), in
    this process: the speed text search is measured against. The small workspace is
    searched with a filter clause on its id, as search here filters by workspace."""
    import tantivy
    from django.db import connection

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", tokenizer_name="en_stem")
    builder.add_integer_field("workspace", indexed=True)
    builder.add_integer_field("chunk", stored=True)
    schema = builder.build()
    folder = tempfile.mkdtemp(prefix="aistack-bench-tantivy-")
    index = tantivy.Index(schema, path=folder)
    writer = index.writer(heap_size=512_000_000)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.id, c.workspace_id, d.title || ' ' || c.text "
                       "FROM retrieval_chunk c JOIN documents_document d ON d.id = c.document_id "
                       "WHERE c.workspace_id = ANY(%s)", [list(workspaces.values())])
        while rows := cursor.fetchmany(10_000):
            for chunk_id, workspace_id, text in rows:
                writer.add_document(tantivy.Document(body=text, workspace=workspace_id,
                                                     chunk=chunk_id))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    print(f"\n{tantivy.__version__}: indexed in {time.perf_counter() - started:.1f}s")
    searcher = index.searcher()
    figures: dict[str, dict[str, Any]] = {}
    for name, workspace_id in workspaces.items():
        latencies = []
        for query in queries + queries:  # the first pass untimed, as for ours
            started = time.perf_counter()
            parsed, _ = index.parse_query_lenient(query, ["body"])
            if name != "big":
                parsed = tantivy.Query.boolean_query([
                    (tantivy.Occur.Must, parsed),
                    (tantivy.Occur.Must, tantivy.Query.term_query(schema, "workspace",
                                                                   workspace_id))])
            hits = searcher.search(parsed, K, count=False).hits
            [searcher.doc(address)["chunk"] for _, address in hits]
            latencies.append((time.perf_counter() - started) * 1000)
        latencies = latencies[len(queries):]
        figures[name] = {"p50_ms": round(median(latencies), 2),
                         "p95_ms": round(percentile(latencies, 0.95), 2)}
        print(f"  {name:<10} {'text (BM25, Tantivy)':<22} {median(latencies):8.2f} "
              f"{percentile(latencies, 0.95):8.2f}")
    shutil.rmtree(folder, ignore_errors=True)
    return figures


def bench_ingest(documents: list[tuple[str, str]], count: int) -> dict[str, float]:
    from aistack.ai.backends.local import encode, onnx_encoder
    from ingest import chunk_inputs, pipeline_ingest

    sample = documents[:count]
    texts = chunk_inputs(sample)
    onnx_encoder()  # loaded before the clock starts, as the pipeline's is

    def raw() -> float:
        started = time.perf_counter()
        encode(texts)  # the default model, int8 in ONNX Runtime, as the pipeline uses
        return time.perf_counter() - started

    def pipeline(round_: int) -> float:
        started = time.perf_counter()
        pipeline_ingest(sample, str(round_))
        return time.perf_counter() - started

    raw_times, pipeline_times = [], []
    for round_ in range(2):
        raw_times.append(raw())
        pipeline_times.append(pipeline(round_))
    raw_s, pipe_s = median(raw_times), median(pipeline_times)
    print(f"\ningest: {len(sample)} SciFact documents = {len(texts)} chunks, "
          f"alternating 2 rounds each (medians)")
    print(f"  the model alone (ONNX int8)     {len(texts) / raw_s:7.1f} chunks/s "
          f"({len(sample) / raw_s:5.1f} documents/s)")
    print(f"  whole pipeline                  {len(texts) / pipe_s:7.1f} chunks/s "
          f"({len(sample) / pipe_s:5.1f} documents/s)")
    print(f"  ratio                           {raw_s / pipe_s:7.3f}  (goal >= 0.9)")
    return {"model_chunks_per_s": round(len(texts) / raw_s, 1),
            "pipeline_chunks_per_s": round(len(texts) / pipe_s, 1),
            "ratio": round(raw_s / pipe_s, 3)}


def summary(chunks: int, search: dict[str, dict[str, Any]] | None,
            tantivy: dict[str, dict[str, Any]] | None,
            ingest: dict[str, float] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The run's figures as one object, in the shape runs are compared by."""
    def modes(by_label: dict[str, Any]) -> dict[str, Any]:
        return {"text": by_label["text (BM25)"], "hybrid": by_label["hybrid (RRF)"],
                "vector": by_label["vector, planned"]}

    figures: dict[str, Any] = {"chunks": chunks, "ingest": ingest, **extra}
    if search is not None:
        figures.update(modes(search["big"]))
        figures["small_workspace"] = modes(search["small"])
        figures["small_workspace"]["full_k"] = search["small"]["vector, planned"]["full_k"]
    if search is not None and tantivy is not None:
        figures["tantivy"] = tantivy["big"]
        figures["small_workspace"]["tantivy"] = tantivy["small"]
        # How many times Tantivy's time ours is, at each percentile: 1.0 is as fast.
        figures["text_vs_tantivy"] = {
            where: {q: round(ours["text"][q] / max(theirs[q], 1e-3), 2)
                    for q in ("p50_ms", "p95_ms")}
            for where, ours, theirs in (("big", figures, tantivy["big"]),
                                        ("small", figures["small_workspace"],
                                         tantivy["small"]))}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--passages", type=int, default=None,
                        help="Embed only this many real passages as the base (quick runs).")
    parser.add_argument("--ingest-documents", type=int, default=600)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--build-only", action="store_true",
                        help="Build the corpus into --home and stop, to measure it later.")
    parser.add_argument("--home", type=Path, default=None,
                        help="Keep the services' data here and reuse a corpus of the same "
                             "size built there by an earlier run (the build is most of a "
                             "large run's time).")
    parser.add_argument("--hnsw-graph", type=lambda v: tuple(map(int, v.split(":"))),
                        default=None, metavar="M:EF_CONSTRUCTION",
                        help="Build the HNSW index so (default: as aistack does).")
    parser.add_argument("--ef-sweep", type=lambda v: [int(x) for x in v.split(",")],
                        default=[], metavar="EF,EF,...",
                        help="Also measure the HNSW walk alone at each ef_search.")
    args = bench_arguments(parser, chunks=300, queries=5, passages=40, ingest_documents=10)
    documents, queries = load_scifact(args.dataset)
    documents = documents[: args.passages] if args.passages else documents
    rng = random.Random(7)
    home = args.home or Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    stop = django_on_embedded_services(home, AI_EMBEDDING_MODEL="local:all-MiniLM-L6-v2-int8",
                                      DATABASE_POOL_SIZE="8",
                                      # Room for a million chunks' text index (1.5 KB each).
                                      SEARCH_CACHE_MB=os.environ.get("SEARCH_CACHE_MB", "2048"))
    ingest = search = tantivy = None
    extra: dict[str, Any] = {}
    try:
        if not args.skip_ingest:
            ingest = bench_ingest(documents, args.ingest_documents)
        if not args.skip_search:
            started = time.perf_counter()
            workspaces = kept_corpus(args.chunks)
            if workspaces is None:
                workspaces = build_corpus(args.chunks, documents)
                extra["build_s"] = round(time.perf_counter() - started)
            if args.build_only:
                return
            extra["hnsw_graph"] = hnsw_graph_ensure(args.hnsw_graph)
            sample = rng.sample(queries, min(args.queries, len(queries)))
            if args.ef_sweep:
                extra["ef_sweep"] = bench_ef_sweep(workspaces["big"], sample, args.ef_sweep)
            search = bench_search(args.chunks, workspaces, sample)
            extra["text_ranking"] = bench_compiled_ranking(workspaces["big"], sample)
            extra["bytes_per_chunk"] = bench_sizes(args.chunks)
            extra["searches_per_s_4_searchers"] = bench_concurrent(workspaces["big"], sample)
            tantivy = bench_tantivy(workspaces, sample)
            extra["hnsw_bulk_vs_insert"] = bench_index_build(
                min(20_000, args.chunks // 5), min(1000, args.chunks // 50))
            for where, ratio in summary(args.chunks, search, tantivy, None, {})[
                    "text_vs_tantivy"].items():
                print(f"  text search here vs Tantivy, {where:<5} workspace: "
                      f"p50 {ratio['p50_ms']:.1f}x  p95 {ratio['p95_ms']:.1f}x  (goal p95 <= 1.0x)")
    finally:
        stop()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    # Last, one line: the figures, for a script to compare runs by.
    print(json.dumps(summary(args.chunks, search, tantivy, ingest, extra)))


if __name__ == "__main__":
    main()
