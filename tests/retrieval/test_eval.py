"""aistack eval: BEIR loading, the metrics, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aistack.evaluation import DatasetError, dataset_load, ndcg_at, recall_at
from harness import clean_env, run_aistack

CORPUS = {
    "d1": ("Vacation policy", "Employees receive 25 days of paid vacation per year."),
    "d2": ("Incident response", "The on-call engineer acknowledges alerts within minutes."),
    "d3": ("Pasta", "Cook the spaghetti in salted boiling water for nine minutes."),
    "d4": ("Expenses", "Expense reports are filed monthly through the finance portal."),
}
QUERIES = {"q1": "How many holidays do employees get?", "q2": "How long do I boil spaghetti?",
           "q3": "Unjudged question"}
QRELS = [("q1", "d1", 1), ("q2", "d3", 1), ("q2", "d4", 0)]


def write_beir(directory: Path) -> Path:
    directory.mkdir()
    (directory / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in CORPUS.items()))
    (directory / "queries.jsonl").write_text("".join(
        json.dumps({"_id": i, "text": q}) + "\n" for i, q in QUERIES.items()))
    (directory / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return directory


def test_metrics_match_hand_computed_values() -> None:
    relevant = {"a": 1, "b": 1}
    # Relevant at ranks 1 and 3: DCG = 1 + 1/log2(4); ideal = 1 + 1/log2(3).
    assert ndcg_at(["a", "x", "b"], relevant, 10) == pytest.approx(
        (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert ndcg_at(["x", "y"], relevant, 10) == 0
    assert recall_at(["a", "x", "b"], relevant, 2) == 0.5
    assert recall_at(["a", "x", "b"], relevant, 10) == 1


def test_only_judged_queries_with_a_relevant_document_are_scored(tmp_path: Path) -> None:
    dataset = dataset_load(write_beir(tmp_path / "beir"))

    assert set(dataset.queries) == {"q1", "q2"}
    assert dataset.qrels["q2"] == {"d3": 1}
    assert len(dataset.corpus) == 4


def test_a_folder_that_is_not_beir_is_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "nope"
    folder.mkdir()
    with pytest.raises(DatasetError, match=r"corpus\.jsonl"):
        dataset_load(folder)
    write_beir(tmp_path / "broken")
    (tmp_path / "broken" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                   "q1\td1\tnot-a-number\n")
    with pytest.raises(DatasetError, match="BEIR"):
        dataset_load(tmp_path / "broken")


@pytest.mark.e2e
def test_the_command_prints_a_table_and_json_scores(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")

    out = run_aistack("eval", str(folder), "--json",
                      env=clean_env(AISTACK_HOME=str(tmp_path / "home"), LOG_LEVEL="WARNING"),
                      timeout=300)

    scores = json.loads(out.strip().splitlines()[-1])
    assert set(scores) == {"hybrid", "vector", "text", "vector_hnsw", "vector_exact"}
    for mode in scores.values():
        assert set(mode) == {"ndcg@10", "recall@10", "recall@100", "p50_ms", "p95_ms"}
    # Four documents, one relevant each: the semantic modes find both at rank 1.
    assert scores["vector"]["ndcg@10"] == 1.0
    assert scores["hybrid"]["recall@10"] == 1.0
    assert "nDCG@10" in out and "documents/s" in out
