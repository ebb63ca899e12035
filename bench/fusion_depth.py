"""Benchmark: what each ranking's depth in hybrid search's fusion buys and costs, at the
product's 10 results.

Run from the repository root: ``python bench/fusion_depth.py [--home DIR]``. Ingests a
BEIR folder (SciFact by default) once into ``--home`` (reused by the next run), then at
each depth of ``--depths`` searches every judged query in hybrid mode for 10 results,
snippets included, as the search page does, after one untimed pass. Prints, side by side
in one run, nDCG@10 and recall@10 by document, and the p50 and p95 latency. (``aistack
eval`` searches for 300 results, where every ranking is that deep whatever the setting.)
Its last line is its figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import bench_arguments, django_on_embedded_services, median, percentile

RESULTS = 10


def corpus_ready(dataset: Any, home: Path) -> tuple[Any, dict[int, str]]:
    """Return the workspace holding the dataset, ingested now unless an earlier run did."""
    from aistack.accounts.models import Workspace
    from aistack.evaluation import corpus_ingest, scratch_workspace_drop

    kept = home / "fusion-depth-corpus.json"
    workspace = Workspace.objects.filter(slug="fusion-depth").first()
    if workspace is not None and kept.is_file():
        by_pk = {int(pk): doc for pk, doc in json.loads(kept.read_text()).items()}
        print(f"reusing the {len(by_pk):,} documents ingested by an earlier run")
        return workspace, by_pk
    if workspace is not None:  # an earlier run stopped while ingesting
        scratch_workspace_drop(workspace=workspace)
    workspace = Workspace.objects.create(slug="fusion-depth", name="fusion depth")
    started = time.perf_counter()
    by_pk = corpus_ingest(dataset=dataset, workspace=workspace, progress=lambda n: None)
    print(f"ingested {len(by_pk):,} documents in {time.perf_counter() - started:.0f} s")
    kept.write_text(json.dumps(by_pk))
    return workspace, by_pk


def measure(dataset: Any, workspace: Any, by_pk: dict[int, str], depth: int
            ) -> dict[str, float]:
    from aistack.evaluation import ndcg_at, recall_at
    from aistack.retrieval import selectors
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search
    from aistack.usage.types import Attribution

    attribution = Attribution(feature="bench", workspace_id=workspace.pk)
    selectors.FUSION_DEPTH = depth
    ndcg, recall, latencies = [], [], []
    for timed in (False, True):
        for query_id, text in dataset.queries.items():
            started = time.perf_counter()
            hits = search(workspace_ids=[workspace.pk], query=text, k=RESULTS,
                          mode=SearchMode.HYBRID, attribution=attribution)
            if not timed:
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            ranked: list[str] = []
            for hit in hits:
                doc = by_pk.get(hit.document_id)
                if doc is not None and doc not in ranked:
                    ranked.append(doc)
            ndcg.append(ndcg_at(ranked, dataset.qrels[query_id], 10))
            recall.append(recall_at(ranked, dataset.qrels[query_id], 10))
    return {"ndcg_at_10": round(statistics.fmean(ndcg), 4),
            "recall_at_10": round(statistics.fmean(recall), 4),
            "p50_ms": round(median(latencies), 2),
            "p95_ms": round(percentile(latencies, 0.95), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--depths", type=lambda v: [int(x) for x in v.split(",")],
                        default=[100, 50, 30, 20], metavar="D,D,...")
    parser.add_argument("--home", type=Path, default=None,
                        help="Keep the services' data and the ingested corpus here, "
                             "for the next run to reuse.")
    args = bench_arguments(parser, depths=[100, 20])
    home = args.home or Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    stop = django_on_embedded_services(home, AI_EMBEDDING_MODEL="local:all-MiniLM-L6-v2-int8")
    figures: dict[str, dict[str, float]] = {}
    try:
        from aistack.evaluation import dataset_load
        from aistack.retrieval.embedding import query_vectors_warm
        from aistack.usage.types import Attribution

        dataset = dataset_load(args.dataset)
        workspace, by_pk = corpus_ready(dataset, home)
        query_vectors_warm(queries=list(dataset.queries.values()),
                           attribution=Attribution(feature="bench", workspace_id=workspace.pk))
        print(f"\nhybrid search for {RESULTS} results, {len(dataset.queries)} queries "
              "(query vectors cached: this is retrieval time)")
        print(f"  {'depth':>6} {'nDCG@10':>8} {'recall@10':>10} {'p50 ms':>8} {'p95 ms':>8}")
        for depth in args.depths:
            figures[str(depth)] = found = measure(dataset, workspace, by_pk, depth)
            print(f"  {depth:>6} {found['ndcg_at_10']:8.4f} {found['recall_at_10']:10.4f} "
                  f"{found['p50_ms']:8.1f} {found['p95_ms']:8.1f}")
    finally:
        stop()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"results": RESULTS, "by_depth": figures}))


if __name__ == "__main__":
    main()
