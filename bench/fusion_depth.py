"""Benchmark: what each ranking's depth in hybrid search's fusion buys and costs, at the
product's 10 results.

Run from the repository root: ``python bench/fusion_depth.py [--home DIR]``. Ingests a
BEIR folder (SciFact by default) once into ``--home`` (reused by the next run on the
same corpus), then at each depth of ``--depths`` searches every judged query of
``--split`` in hybrid mode for 10 results, snippets included, as the search page does.
Prints, side by side in one run: nDCG@10 and recall@10 by document, each depth's
nDCG@10 against the first depth's query by query (mean difference, 95% bootstrap
interval), and the p50 and p95 latency over interleaved rounds after an untimed pass.
(``aistack eval`` searches for 300 results, where every ranking is that deep whatever
the setting.) Tune on ``--split train``, report on ``test``. Its last line is its
figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import bench_arguments, django_on_embedded_services, median, percentile

RESULTS = 10
TIMED_ROUNDS = 2
SPLITS = {"test": ("queries.jsonl", "qrels.tsv"),
          "train": ("queries_train.jsonl", "qrels_train.tsv")}


def corpus_ready(dataset: Any, home: Path, identity: str) -> tuple[Any, dict[int, str]]:
    """Return the workspace holding the corpus, ingested now unless an earlier run did."""
    from aistack.accounts.models import Workspace
    from aistack.evaluation import corpus_ingest, scratch_workspace_drop

    kept = home / "fusion-depth-corpus.json"
    workspace = Workspace.objects.filter(slug="fusion-depth").first()
    if workspace is not None and kept.is_file():
        found = json.loads(kept.read_text())
        if isinstance(found, dict) and found.get("corpus") == identity:
            by_pk = {int(pk): doc for pk, doc in found["documents"].items()}
            print(f"reusing the {len(by_pk):,} documents ingested by an earlier run")
            return workspace, by_pk
    if workspace is not None:  # another corpus, or a run stopped while ingesting
        scratch_workspace_drop(workspace=workspace)
    kept.unlink(missing_ok=True)
    workspace = Workspace.objects.create(slug="fusion-depth", name="fusion depth")
    started = time.perf_counter()
    by_pk = corpus_ingest(dataset=dataset, workspace=workspace, progress=lambda n: None)
    print(f"ingested {len(by_pk):,} documents in {time.perf_counter() - started:.0f} s")
    written = kept.with_suffix(".part")
    written.write_text(json.dumps({"corpus": identity, "documents": by_pk}))
    written.replace(kept)
    return workspace, by_pk


def searched(dataset: Any, workspace: Any, by_pk: dict[int, str], depth: int
             ) -> tuple[dict[str, list[str]], list[float]]:
    """Search every query at this fusion depth: the documents found, and the latencies."""
    from aistack.evaluation import documents_ranked
    from aistack.retrieval import selectors
    from aistack.retrieval.selectors import SearchMode
    from aistack.retrieval.services import search
    from aistack.usage.types import Attribution

    attribution = Attribution(feature="bench", workspace_id=workspace.pk)
    selectors.FUSION_DEPTH = depth
    rankings, latencies = {}, []
    for query_id, text in dataset.queries.items():
        started = time.perf_counter()
        hits = search(workspace_ids=[workspace.pk], query=text, k=RESULTS,
                      mode=SearchMode.HYBRID, attribution=attribution)
        latencies.append((time.perf_counter() - started) * 1000)
        rankings[query_id] = documents_ranked(hits, by_pk)
    return rankings, latencies


def bootstrap(differences: list[float], rounds: int = 2_000) -> tuple[float, float]:
    """Return a 95% interval of the mean of paired differences (seeded resampling)."""
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(differences, k=len(differences)))
                   for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--depths", type=lambda v: [int(x) for x in v.split(",")],
                        default=[100, 50, 30, 20], metavar="D,D,...")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--max-docs", type=int, default=None,
                        help="Ingest the documents judged for the queries, then others up "
                             "to this many in all.")
    parser.add_argument("--home", type=Path, default=None,
                        help="Keep the services' data and the ingested corpus here, "
                             "for the next run to reuse.")
    args = bench_arguments(parser, depths=[100, 20], max_queries=5, max_docs=40)
    home = args.home or Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    stop = django_on_embedded_services(home, AI_EMBEDDING_MODEL="local:all-MiniLM-L6-v2-int8")
    figures: dict[str, dict[str, float]] = {}
    try:
        from aistack.evaluation import dataset_load, dataset_sample, ndcg_at, recall_at
        from aistack.retrieval.embedding import query_vectors_warm
        from aistack.usage.types import Attribution

        queries_name, qrels_name = SPLITS[args.split]
        dataset = dataset_sample(
            dataset=dataset_load(args.dataset, queries_name=queries_name,
                                 qrels_name=qrels_name),
            max_queries=args.max_queries, max_docs=args.max_docs)
        # Both splits share the corpus: ingested whole, it serves either.
        identity = f"{args.dataset.resolve()}|{args.max_docs}|" + (
            "" if args.max_docs is None else f"{args.split}|{args.max_queries}")
        workspace, by_pk = corpus_ready(dataset, home, identity)
        query_vectors_warm(queries=list(dataset.queries.values()),
                           attribution=Attribution(feature="bench", workspace_id=workspace.pk))
        latencies: dict[int, list[float]] = {depth: [] for depth in args.depths}
        rankings = {depth: searched(dataset, workspace, by_pk, depth)[0]
                    for depth in args.depths}  # also the untimed pass
        for _ in range(TIMED_ROUNDS):
            for depth in args.depths:
                latencies[depth] += searched(dataset, workspace, by_pk, depth)[1]
        print(f"\nhybrid search for {RESULTS} results, {len(dataset.queries)} queries "
              f"({args.split}), {len(by_pk):,} documents (query vectors cached)")
        print(f"  {'depth':>6} {'nDCG@10':>8} {'recall@10':>10} "
              f"{f'vs {args.depths[0]} (95% CI)':>26} {'p50 ms':>8} {'p95 ms':>8}")
        first = None
        for depth in args.depths:
            ndcg = {q: ndcg_at(rankings[depth][q], dataset.qrels[q], 10) for q in dataset.queries}
            recall = [recall_at(rankings[depth][q], dataset.qrels[q], 10)
                      for q in dataset.queries]
            first = first or ndcg
            differences = [ndcg[q] - first[q] for q in dataset.queries]
            low, high = bootstrap(differences)
            figures[str(depth)] = found = {
                "ndcg_at_10": round(statistics.fmean(ndcg.values()), 4),
                "recall_at_10": round(statistics.fmean(recall), 4),
                "ndcg_vs_first": round(statistics.fmean(differences), 4),
                "ndcg_vs_first_ci95": [round(low, 4), round(high, 4)],
                "p50_ms": round(median(latencies[depth]), 2),
                "p95_ms": round(percentile(latencies[depth], 0.95), 2)}
            print(f"  {depth:>6} {found['ndcg_at_10']:8.4f} {found['recall_at_10']:10.4f} "
                  f"{found['ndcg_vs_first']:+9.4f} [{low:+.4f}, {high:+.4f}] "
                  f"{found['p50_ms']:8.1f} {found['p95_ms']:8.1f}")
    finally:
        stop()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"results": RESULTS, "split": args.split, "by_depth": figures}))


if __name__ == "__main__":
    main()
