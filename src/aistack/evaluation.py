"""Retrieval quality on a BEIR-layout dataset, measured through the real pipeline."""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from aistack.accounts.models import Workspace
from aistack.documents.indexing import documents_process_now
from aistack.documents.models import Document
from aistack.documents.services import documents_import
from aistack.jobs import kinds
from aistack.jobs.services import jobs_delete
from aistack.retrieval.embedding import query_vectors_forget, query_vectors_warm
from aistack.retrieval.index import chunks_delete
from aistack.retrieval.selectors import SearchHit, SearchMode
from aistack.retrieval.services import SEARCH_RESULTS, search
from aistack.usage.types import Attribution

# Chunks fetched per query: a document may contribute several, and recall@100
# is counted over documents.
CHUNKS_PER_QUERY = 300
# A sample of a given size is the same on every run, so two runs compare like with like.
SAMPLE_SEED = 0


class DatasetError(Exception):
    """The folder is not a BEIR-layout dataset."""


@dataclass(frozen=True, kw_only=True)
class Dataset:
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    # Graded relevance of the relevant documents of each query (the scores above 0).
    qrels: dict[str, dict[str, int]]
    # Every document judged for a query, found relevant or not.
    judged: dict[str, set[str]]


@dataclass(frozen=True, kw_only=True)
class ModeScores:
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    # A page of search as a person gets it: SEARCH_RESULTS hits with snippets, the
    # query's vector already cached (as a repeated or warmed query's is).
    p50_ms: float
    p95_ms: float
    # The same page with the query embedded first (None in text mode, which embeds nothing).
    p95_ms_embedding: float | None
    # The searches the scores come from: CHUNKS_PER_QUERY hits, no snippets.
    p95_ms_deep: float

    def as_json(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {"ndcg@10": round(self.ndcg_at_10, 4), "recall@10": round(self.recall_at_10, 4),
                "recall@100": round(self.recall_at_100, 4), "p50_ms": ms(self.p50_ms),
                "p95_ms": ms(self.p95_ms), "p95_ms_embedding": ms(self.p95_ms_embedding),
                "p95_ms_deep": ms(self.p95_ms_deep)}


def _text(value: object) -> str:
    # PostgreSQL text holds neither NUL nor a lone surrogate (which JSON allows).
    if not isinstance(value, str):
        raise TypeError
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _jsonl(path: Path) -> Iterator[tuple[str, str, str]]:
    """Yield each line's id, title and text; a line that is not a BEIR row is refused by number."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "_id" not in row:
                    raise TypeError
                yield (str(row["_id"]), _text(row.get("title") or ""),
                       _text(row.get("text") or ""))
            except (ValueError, TypeError):
                raise DatasetError(
                    f'{path.name} line {number} is not a JSON object with an "_id" and '
                    'a "text" (and "title") that are strings'
                ) from None


def dataset_load(directory: Path, *, qrels_name: str = "qrels.tsv",
                 queries_name: str = "queries.jsonl") -> Dataset:
    """Read corpus.jsonl, the queries and the relevance judgements of a BEIR folder."""
    paths = {name: directory / name for name in ("corpus.jsonl", queries_name, qrels_name)}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise DatasetError(f"{directory} has no {', '.join(missing)}")
    try:
        corpus = {doc_id: (title, text) for doc_id, title, text in _jsonl(paths["corpus.jsonl"])}
        queries = {query_id: text for query_id, _, text in _jsonl(paths[queries_name])}
        qrels_lines = paths[qrels_name].read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{directory} holds a file that is not UTF-8: {exc}") from None
    qrels: dict[str, dict[str, int]] = {}
    judged: dict[str, set[str]] = {}
    for n, line in enumerate(qrels_lines):
        parts = line.split("\t")
        if not line.strip() or (n == 0 and not parts[-1].strip().lstrip("-").isdigit()):
            continue  # a blank line, or the header
        try:
            query_id, doc_id, score = parts[0], parts[1], int(parts[2])
        except (IndexError, ValueError):
            raise DatasetError(f"{qrels_name} line {n + 1} is not query-id, corpus-id and "
                               "an integer score, separated by tabs") from None
        judged.setdefault(query_id, set()).add(doc_id)
        if score > 0:
            qrels.setdefault(query_id, {})[doc_id] = score
    queries = {qid: text for qid, text in queries.items() if qid in qrels and text.strip()}
    if not any(doc_id in corpus for qid in queries for doc_id in qrels[qid]):
        raise DatasetError(
            f"{directory} has no query with text and a relevant document in the corpus: "
            "there is nothing to score"
        )
    return Dataset(corpus=corpus, queries=queries, qrels=qrels, judged=judged)


def dataset_sample(*, dataset: Dataset, max_queries: int | None,
                   max_docs: int | None) -> Dataset:
    """Return a seeded sample: up to ``max_queries`` queries, with every document judged
    for them, and other documents up to ``max_docs`` in all."""
    rng = random.Random(SAMPLE_SEED)  # noqa: S311
    query_ids = list(dataset.queries)
    if max_queries is not None and max_queries < len(query_ids):
        query_ids = rng.sample(query_ids, max_queries)
    chosen = set(query_ids)
    # A judged document left out would score as a miss, and judged non-relevant ones
    # are the near misses that make a ranking hard: they stay whatever the size.
    needed = {doc for query in chosen for doc in dataset.judged[query]} & dataset.corpus.keys()
    others = [doc for doc in dataset.corpus if doc not in needed]
    room = len(others) if max_docs is None else max(0, max_docs - len(needed))
    kept = needed | set(rng.sample(others, min(room, len(others))))
    return Dataset(
        corpus={doc: text for doc, text in dataset.corpus.items() if doc in kept},
        queries={query: text for query, text in dataset.queries.items() if query in chosen},
        qrels={query: found for query, found in dataset.qrels.items() if query in chosen},
        judged={query: docs for query, docs in dataset.judged.items() if query in chosen},
    )


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    """Return nDCG@k with linear gains, as trec_eval computes it."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    """Return the share of relevant documents found in the top k."""
    return len(set(ranked[:k]) & relevant.keys()) / len(relevant) if relevant else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def corpus_ingest(*, dataset: Dataset, workspace: Workspace,
                  progress: Callable[[int], None]) -> dict[int, str]:
    """Import and index the corpus; return the dataset id of every document created."""
    ids = list(dataset.corpus)
    documents = documents_import(
        workspace=workspace, author=None, deliver=False, summarize=False,
        items=[(dataset.corpus[i][0] or i, dataset.corpus[i][1] or dataset.corpus[i][0])
               for i in ids],
    )
    by_pk = {document.pk: dataset_id for document, dataset_id in zip(documents, ids, strict=True)}
    documents_process_now(document_ids=list(by_pk), progress=progress)
    return by_pk


def documents_ranked(hits: Sequence[SearchHit], by_pk: dict[int, str]) -> list[str]:
    """Return the dataset ids of the documents the hits are passages of, each once, in
    the order of their first passage."""
    ranked: list[str] = []
    for hit in hits:
        doc = by_pk.get(hit.document_id)
        if doc is not None and doc not in ranked:
            ranked.append(doc)
    return ranked


def _runs(modes: list[SearchMode], exact_vector: bool) -> list[tuple[str, SearchMode, bool | None]]:
    # "vector" is what search does (exact for small collections, HNSW for large ones);
    # the two extra rows force each path, so the index's loss is measured at any size.
    runs: list[tuple[str, SearchMode, bool | None]] = [(mode.value, mode, None) for mode in modes]
    if exact_vector and SearchMode.VECTOR in modes:
        runs += [("vector_hnsw", SearchMode.VECTOR, False),
                 ("vector_exact", SearchMode.VECTOR, True)]
    return runs


def searches_count(*, dataset: Dataset, modes: list[SearchMode], exact_vector: bool) -> int:
    """Return how many searches ``evaluate`` makes (for its progress)."""
    passes = sum(2 if mode == SearchMode.TEXT else 3 for _, mode, _ in _runs(modes, exact_vector))
    return passes * len(dataset.queries)


def evaluate(*, dataset: Dataset, workspace: Workspace, by_pk: dict[int, str],
             modes: list[SearchMode], exact_vector: bool,
             progress: Callable[[int], None]) -> dict[str, ModeScores]:
    """Run every query in every mode, score the rankings and time the searches."""
    attribution = Attribution(feature="eval", workspace_id=workspace.pk)
    queries = list(dataset.queries.values())
    # Embed all queries first (batched) so latencies measure search, not the model.
    query_vectors_warm(queries=queries, attribution=attribution)

    def timed(text: str, *, mode: SearchMode, exact: bool | None, k: int,
              snippets: bool) -> tuple[list[SearchHit], float]:
        started = time.perf_counter()
        hits = search(workspace_ids=[workspace.pk], query=text, k=k, mode=mode,
                      attribution=attribution, exact=exact, snippets=snippets)
        elapsed = (time.perf_counter() - started) * 1000
        progress(1)
        return hits, elapsed

    results: dict[str, ModeScores] = {}
    for name, mode, exact in _runs(modes, exact_vector):
        ndcg, r10, r100, deep = [], [], [], []
        for query_id, text in dataset.queries.items():
            hits, elapsed = timed(text, mode=mode, exact=exact, k=CHUNKS_PER_QUERY,
                                  snippets=False)
            deep.append(elapsed)
            ranked = documents_ranked(hits, by_pk)
            relevant = dataset.qrels[query_id]
            ndcg.append(ndcg_at(ranked, relevant, 10))
            r10.append(recall_at(ranked, relevant, 10))
            r100.append(recall_at(ranked, relevant, 100))
        page = [timed(text, mode=mode, exact=exact, k=SEARCH_RESULTS, snippets=True)[1]
                for text in queries]
        embedding = None
        if mode != SearchMode.TEXT:
            embedding = []
            for text in queries:
                query_vectors_forget(queries=[text])
                embedding.append(timed(text, mode=mode, exact=exact, k=SEARCH_RESULTS,
                                       snippets=True)[1])
        results[name] = ModeScores(
            ndcg_at_10=statistics.fmean(ndcg), recall_at_10=statistics.fmean(r10),
            recall_at_100=statistics.fmean(r100), p50_ms=statistics.median(page),
            p95_ms=_percentile(page, 0.95),
            p95_ms_embedding=None if embedding is None else _percentile(embedding, 0.95),
            p95_ms_deep=_percentile(deep, 0.95),
        )
    return results


def scratch_workspace_drop(*, workspace: Workspace) -> None:
    """Delete an evaluation workspace with everything in it."""
    with transaction.atomic():
        document_ids = list(Document.objects.filter(workspace=workspace)
                            .values_list("pk", flat=True))
        chunks_delete(document_ids=document_ids)
        # In bulk first: the per-document cleanup on delete then finds nothing to do.
        jobs_delete(kinds=kinds.for_model("documents.Document"), object_ids=document_ids)
        workspace.delete()

