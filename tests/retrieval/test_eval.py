"""aistack eval: BEIR loading, sampling, the metrics, and the command end to end."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from django.conf import settings

from aistack.accounts.models import Workspace
from aistack.documents.models import Document
from aistack.evaluation import (
    Dataset,
    DatasetError,
    corpus_ingest,
    dataset_load,
    dataset_sample,
    evaluate,
    ndcg_at,
    recall_at,
    searches_count,
)
from aistack.jobs.kinds import JobStatus
from aistack.observability.metrics import cache_requests
from aistack.retrieval.selectors import SearchMode
from harness import aistack, clean_env, kill_group, run_aistack, wait_for
from tests.e2e.test_worker_kill import database_url_of_test_db

CORPUS = {
    "d1": ("Vacation policy", "Employees receive 25 days of paid vacation per year."),
    "d2": ("Incident response", "The on-call engineer acknowledges alerts within minutes."),
    "d3": ("Pasta", "Cook the spaghetti in salted boiling water for nine minutes."),
    "d4": ("Expenses", "Expense reports are filed monthly through the finance portal."),
}
QUERIES = {"q1": "How many holidays do employees get?", "q2": "How long do I boil spaghetti?",
           "q3": "Unjudged question"}
QRELS = [("q1", "d1", 1), ("q2", "d3", 1), ("q2", "d4", 0)]


def write_beir(directory: Path, corpus: dict[str, tuple[str, str]] = CORPUS,
               queries: dict[str, str] = QUERIES,
               qrels: list[tuple[str, str, int]] = QRELS) -> Path:
    directory.mkdir()
    (directory / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in corpus.items()))
    (directory / "queries.jsonl").write_text("".join(
        json.dumps({"_id": i, "text": q}) + "\n" for i, q in queries.items()))
    (directory / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return directory


def write_large_beir(directory: Path, *, documents: int) -> Path:
    """Write a corpus of made-up documents big enough to take minutes to ingest."""
    rng = random.Random(1)
    words = [f"{a}{b}" for a in ("sol", "mar", "ten", "vik", "oru", "pel")
             for b in ("ad", "ex", "im", "on", "us", "ya", "ith", "orn")]
    corpus = {f"d{n}": (f"Note {n}", " ".join(rng.choices(words, k=120)))
              for n in range(documents)}
    queries = {f"q{n}": " ".join(rng.choices(words, k=4)) for n in range(10)}
    return write_beir(directory, corpus, queries, [(f"q{n}", f"d{n}", 1) for n in range(10)])


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


def test_a_sample_keeps_every_document_judged_for_its_queries() -> None:
    # 40 queries with two relevant documents and a judged non-relevant one each, in a
    # corpus of 1,000.
    qrels = {f"q{q}": {f"d{3 * q}": 1, f"d{3 * q + 1}": 2} for q in range(40)}
    dataset = Dataset(corpus={f"d{n}": (f"title {n}", f"text {n}") for n in range(1000)},
                      queries={query: f"question {query}" for query in qrels}, qrels=qrels,
                      judged={f"q{q}": {f"d{3 * q}", f"d{3 * q + 1}", f"d{3 * q + 2}"}
                              for q in range(40)})

    sample = dataset_sample(dataset=dataset, max_queries=10, max_docs=100)

    assert len(sample.queries) == 10
    assert set(sample.qrels) == set(sample.judged) == set(sample.queries)
    judged = {doc for query in sample.queries for doc in dataset.judged[query]}
    assert len(judged) == 30
    assert judged <= sample.corpus.keys()
    assert len(sample.corpus) == 100
    assert sample == dataset_sample(dataset=dataset, max_queries=10, max_docs=100)
    # Fewer documents than the judged ones: the judged ones still, and no others.
    assert dataset_sample(dataset=dataset, max_queries=10, max_docs=5).corpus.keys() == judged
    # Queries alone: the whole corpus stays.
    assert dataset_sample(dataset=dataset, max_queries=3, max_docs=None).corpus == dataset.corpus


def test_a_folder_that_is_not_beir_is_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "nope"
    folder.mkdir()
    with pytest.raises(DatasetError, match=r"corpus\.jsonl"):
        dataset_load(folder)
    write_beir(tmp_path / "broken")
    (tmp_path / "broken" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                   "q1\td1\tnot-a-number\n")
    with pytest.raises(DatasetError, match=r"qrels\.tsv line 2 is not query-id"):
        dataset_load(tmp_path / "broken")

    # Each malformed line is named, and nothing reaches the database it could not hold.
    for n, (name, line) in enumerate([
        ("corpus.jsonl", "[1, 2, 3]"), ("corpus.jsonl", "null"),
        ("queries.jsonl", '{"_id": "q9", "text": null, "title": 7}'),
        ("corpus.jsonl", "{not json"),
    ]):
        folder = write_beir(tmp_path / f"bad-{n}")
        with (folder / name).open("a") as handle:
            handle.write(line + "\n")
        with pytest.raises(DatasetError, match=rf"{name} line \d+ is not a JSON object"):
            dataset_load(folder)
    stored = write_beir(tmp_path / "odd-text", corpus={"d1": ("T", "Zero\x00 here \ud800.")})
    assert dataset_load(stored).corpus["d1"] == ("T", "Zero here ?.")

    # Judgements of documents the corpus lacks leave nothing to score.
    missing = write_beir(tmp_path / "missing", qrels=[("q1", "elsewhere", 1)])
    with pytest.raises(DatasetError, match="nothing to score"):
        dataset_load(missing)


def scratch_homes(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("aistack-eval-*"))


def processes_using(home: Path) -> list[psutil.Process]:
    """Return the live processes (zombies are not) started on ``home`` or working in it:
    the servers name it on their command line, PostgreSQL's backends run in it."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        places = [*(process.info["cmdline"] or ()), process.info["cwd"] or ""]
        if (process.info["status"] != psutil.STATUS_ZOMBIE
                and any(str(home) in place for place in places)):
            found.append(process)
    return found


@pytest.mark.django_db
def test_latency_is_timed_on_a_page_of_search_then_again_embedding_each_query(
        tmp_path: Path) -> None:
    dataset = dataset_load(write_beir(tmp_path / "tiny"))
    workspace = Workspace.objects.create(name="eval", slug="eval-latency")
    by_pk = corpus_ingest(dataset=dataset, workspace=workspace, progress=lambda n: None)
    misses = cache_requests.labels(cache="query_vector", feature="eval", result="miss")
    missed_before = misses._value.get()
    searched: list[int] = []

    scores = evaluate(dataset=dataset, workspace=workspace, by_pk=by_pk,
                      modes=list(SearchMode), exact_vector=True, progress=searched.append)

    # Text mode: the scored searches and a page each; the four semantic runs also a page
    # with the query embedded, i.e. each of the two queries missed the cache four times.
    assert sum(searched) == searches_count(dataset=dataset, modes=list(SearchMode),
                                           exact_vector=True) == 2 * 2 + 4 * 2 * 3
    assert misses._value.get() - missed_before == 4 * 2
    assert scores["text"].p95_ms_embedding is None
    for name, result in scores.items():
        assert 0 < result.p50_ms <= result.p95_ms and result.p95_ms_deep > 0
        if name != "text":
            assert result.p95_ms_embedding is not None and result.p95_ms_embedding > 0
    assert scores["vector"].ndcg_at_10 == 1.0


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_command_runs_on_services_of_its_own_and_deletes_them(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    # The test database and Redis stand for the configured, live ones.
    out = run_aistack("eval", str(folder), "--json",
                      env=clean_env(AISTACK_HOME=str(tmp_path / "home"), TMPDIR=str(tmp),
                                    DATABASE_URL=database_url_of_test_db(),
                                    REDIS_URL=settings.REDIS_URL),
                      timeout=300)

    scores = json.loads(out.strip().splitlines()[-1])
    assert set(scores) == {"hybrid", "vector", "text", "vector_hnsw", "vector_exact"}
    for mode in scores.values():
        assert set(mode) == {"ndcg@10", "recall@10", "recall@100", "p50_ms", "p95_ms",
                             "p95_ms_embedding", "p95_ms_deep"}
    assert scores["text"]["p95_ms_embedding"] is None
    # Four documents, one relevant each: the semantic modes find both at rank 1.
    assert scores["vector"]["ndcg@10"] == 1.0
    assert scores["hybrid"]["recall@10"] == 1.0
    assert "nDCG@10" in out and "documents/s" in out
    assert not Workspace.objects.exists() and not Document.objects.exists()
    assert not (tmp_path / "home").exists()
    assert scratch_homes(tmp) == []


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_live_runs_a_sample_in_the_configured_database(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")

    out = run_aistack("eval", str(folder), "--live", "--keep", "--no-exact",
                      "--max-queries", "1", "--max-docs", "2",
                      env=clean_env(AISTACK_HOME=str(tmp_path / "home"),
                                    DATABASE_URL=database_url_of_test_db(),
                                    REDIS_URL=settings.REDIS_URL),
                      timeout=300)

    assert "tiny: 2 of 4 documents, 1 of 2 queries" in out
    workspace = Workspace.objects.get(name="eval tiny")
    documents = Document.objects.filter(workspace=workspace)
    assert documents.count() == 2
    assert {d.embedding_status for d in documents} == {JobStatus.COMPLETE}


def test_keep_without_live_is_refused(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "aistack", "eval",
                             str(write_beir(tmp_path / "tiny")), "--keep"],
                            env=clean_env(AISTACK_HOME=str(tmp_path / "home")),
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert "--keep needs --live" in result.stderr
    assert not (tmp_path / "home").exists()


DROPPED_CTRL_C = """
import os, signal, sys, time, weakref
from aistack.cli.base import stop_signals_kept
if sys.argv[1] == "kept":
    stop_signals_kept()
class Thing:
    pass
def finalizer():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handler raises here, inside the finalizer
thing = Thing()
weakref.finalize(thing, finalizer)
try:
    del thing
    time.sleep(5)
    print("carried on")
except KeyboardInterrupt:
    print("stopped")
"""


@pytest.mark.parametrize(("mode", "outcome"), [("kept", "stopped"), ("default", "carried on")])
def test_a_ctrl_c_raised_inside_a_finalizer_still_stops_the_command(mode: str,
                                                                      outcome: str) -> None:
    result = subprocess.run([sys.executable, "-c", DROPPED_CTRL_C, mode], capture_output=True,
                            text=True, timeout=30, check=False)

    assert result.stdout.strip() == outcome, result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("signum", "to_group", "code"), [
    # Ctrl-C in a terminal signals the whole foreground group; click says "Aborted!".
    (signal.SIGINT, True, 1),
    # `kill`, a supervisor, a container stop.
    (signal.SIGTERM, False, 128 + signal.SIGTERM),
], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_ends_within_two_seconds_and_leaves_nothing(
    tmp_path: Path, signum: signal.Signals, to_group: bool, code: int
) -> None:
    folder = write_large_beir(tmp_path / "large", documents=3000)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = aistack("eval", str(folder), log=tmp_path / "eval.log",
                      env=clean_env(AISTACK_HOME=str(tmp_path / "home"), TMPDIR=str(tmp)))
    try:
        home = wait_for(lambda: scratch_homes(tmp), timeout=60, message="the scratch home")[0]
        url_file = home / "run" / "postgres.url"
        wait_for(url_file.exists, timeout=60, message="the scratch PostgreSQL")

        def chunks_stored() -> int:
            with psycopg.connect(url_file.read_text().strip()) as connection:
                found = connection.execute(
                    "SELECT to_regclass('retrieval_chunk') IS NOT NULL").fetchone()
                if not found or not found[0]:
                    return 0
                row = connection.execute("SELECT count(*) FROM retrieval_chunk").fetchone()
                return int(row[0]) if row else 0

        # Once a batch is stored the next is being embedded: the heaviest moment to stop.
        wait_for(chunks_stored, timeout=180, interval=0.5, message="the first batch indexed")
        assert processes_using(home)
        started = time.monotonic()
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        returncode = process.wait(timeout=30)
        took = time.monotonic() - started
        print(f"{signum.name}: ended {took:.2f}s after the signal")
    finally:
        if process.poll() is None:
            kill_group(process)

    assert took < 2, (took, (tmp_path / "eval.log").read_text()[-3000:])
    assert returncode == code
    assert scratch_homes(tmp) == []
    assert processes_using(home) == []
    assert not (tmp_path / "home").exists()
