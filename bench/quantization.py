"""Benchmark: what int8 costs the built-in model's vectors, and what keeping some of its
matrices at full precision buys back.

    python bench/quantization.py [--dataset ../shared/data/scifact] [--max-docs N]
                                 [--max-queries N] [--keep NODE,NODE[;NODE,...]]

Embeds a BEIR corpus's chunks as aistack ingests them (title and text) and its judged
queries with the full-precision graph and the int8 one, in ONNX Runtime, in this process
(no database, no index: the model's loss alone). Each ``;``-separated set of ``--keep``
is another int8 model with those nodes left at full precision (``attended{n}``,
``projected{n}``, ``up{n}_out``, ``down{n}_out`` for layer n of 0-5).

For each int8 model, side by side in one run: chunks/s embedding the corpus in one call
(against full precision's), the cosine of its vectors to full precision's (mean and
lowest), and nDCG@10 by document of exact vector search, with the paired 95% bootstrap
interval of its difference to full precision's. The default model is also run on the
corpus in calls of ``INGEST_BATCH`` documents (as ingest claims them, though it also
drops repeated texts and groups a call's texts by their hash): int8's vectors depend on
their batch, as activations are quantized by the range of the whole batch, so its nDCG
moves with how a corpus happened to be batched. Ends with one JSON line.
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

import numpy as np

from common import bench_arguments
from fusion_depth import bootstrap

DEPTH = 300  # chunks read per query, for ten distinct documents and more


def corpus_embedded(encoder: Any, texts: list[str], calls: list[slice]) -> tuple[Any, float]:
    """Return the vectors of ``texts`` embedded call by call, and the seconds taken."""
    started = time.perf_counter()
    vectors = np.vstack([encoder.encode(texts[call]) for call in calls])
    return vectors, time.perf_counter() - started


def ndcg_by_query(vectors: Any, queries: Any, owners: list[str], dataset: Any) -> list[float]:
    """nDCG@10 of each judged query, ranking documents by their best chunk, exactly."""
    from aistack.evaluation import ndcg_at

    scores = queries @ vectors.T
    found = []
    for row, query_id in zip(scores, dataset.queries, strict=True):
        nearest = np.argpartition(-row, min(DEPTH, row.size - 1))[:DEPTH]
        ranked: list[str] = []
        for chunk in nearest[np.argsort(-row[nearest], kind="stable")]:
            if owners[chunk] not in ranked:
                ranked.append(owners[chunk])
        found.append(ndcg_at(ranked, dataset.qrels[query_id], 10))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--max-docs", type=int, default=None,
                        help="Embed the documents judged for the queries, then others up "
                             "to this many in all.")
    parser.add_argument("--keep", default="",
                        help="Sets of nodes kept at full precision, each an int8 model: "
                             "'down0_out,down1_out;attended5'.")
    args = bench_arguments(parser, max_queries=5, max_docs=40, keep="down5_out")
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    os.environ.update({"AISTACK_HOME": str(home), "LOG_LEVEL": "WARNING",
                       "DJANGO_SETTINGS_MODULE": "aistack.settings"})
    try:
        import django

        django.setup()
        run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> None:
    from aistack.ai.backends.minilm_onnx import Encoder, graph_write
    from aistack.documents.indexing import INGEST_BATCH
    from aistack.evaluation import dataset_load, dataset_sample
    from aistack.retrieval.chunking import chunk_texts
    from aistack.retrieval.embedding import embedding_input

    dataset = dataset_sample(dataset=dataset_load(args.dataset), max_queries=args.max_queries,
                             max_docs=args.max_docs)
    ids = list(dataset.corpus)
    chunked = chunk_texts([dataset.corpus[i][1] or dataset.corpus[i][0] for i in ids])
    texts, owners, ingest_calls = [], [], []
    for start in range(0, len(ids), INGEST_BATCH):
        first = len(texts)
        for i, specs in zip(ids[start:start + INGEST_BATCH],
                            chunked[start:start + INGEST_BATCH], strict=True):
            title = dataset.corpus[i][0] or i
            texts += [embedding_input(title=title, text=spec.text) for spec in specs]
            owners += [i] * len(specs)
        ingest_calls.append(slice(first, len(texts)))
    queries = list(dataset.queries.values())
    one_call = [slice(0, len(texts))]
    threads = os.cpu_count() or 1
    print(f"{len(ids)} documents = {len(texts)} chunks, {len(queries)} judged queries, "
          f"{threads} threads; vectors by exact search, {DEPTH} chunks a query")

    models: dict[str, tuple[str, ...]] = {"int8": ()}
    for kept in filter(None, args.keep.split(";")):
        models["int8 keeping " + kept] = tuple(filter(None, kept.split(",")))
    paths = {"fp32": home / "fp32.onnx"}
    graph_write(paths["fp32"], quantized=False)
    for n, (name, kept) in enumerate(models.items()):
        paths[name] = home / f"int8-{n}.onnx"
        graph_write(paths[name], quantized=True, exclude=kept)

    runs = [("fp32", "fp32", one_call), *[(name, name, one_call) for name in models],
            ("int8, in calls of 256 documents", "int8", ingest_calls)]
    found: dict[str, dict[str, Any]] = {}
    reference: tuple[Any, list[float], float] | None = None
    print(f"\n  {'model':<36} {'embedding':>16} {'vs fp32':>8} {'cos mean':>9} {'cos min':>8} "
          f"{'nDCG@10':>8} {'vs fp32 (95% CI)':>26}")
    for label, model, calls in runs:
        encoder = Encoder(paths[model], threads=threads)
        encoder.encode(texts[:8])  # the session's first call sets it up
        vectors, seconds = corpus_embedded(encoder, texts, calls)
        ndcg = ndcg_by_query(vectors, encoder.encode(queries), owners, dataset)
        speed = len(texts) / seconds
        if reference is None:
            reference = (vectors, ndcg, speed)
        cosines = np.sum(vectors * reference[0], axis=1)
        differences = [a - b for a, b in zip(ndcg, reference[1], strict=True)]
        low, high = bootstrap(differences)
        figure = {"chunks_s": round(speed, 1), "vs_fp32_speed": round(speed / reference[2], 3),
                  "cos_mean": round(float(cosines.mean()), 5),
                  "cos_min": round(float(cosines.min()), 4),
                  "ndcg_at_10": round(float(np.mean(ndcg)), 4),
                  "ndcg_vs_fp32": round(float(np.mean(differences)), 4),
                  "ndcg_vs_fp32_ci": [round(low, 4), round(high, 4)]}
        found[label] = figure
        shown = label if len(label) <= 36 else label[:33] + "..."
        print(f"  {shown:<36} {speed:7.1f} chunks/s {figure['vs_fp32_speed']:7.2f}x "
              f"{figure['cos_mean']:9.5f} {figure['cos_min']:8.4f} {figure['ndcg_at_10']:8.4f} "
              f"{figure['ndcg_vs_fp32']:+9.4f} ({low:+.4f}, {high:+.4f})")
        del encoder
    print(json.dumps({"documents": len(ids), "chunks": len(texts), "queries": len(queries),
                      "models": found}))


if __name__ == "__main__":
    sys.exit(main())
