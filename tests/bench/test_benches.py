"""Every benchmark and drill runs to its end at a smoke size, so none can rot unseen."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import clean_env

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(path.stem for path in (ROOT / "bench").glob("*.py")
                 if "def main(" in path.read_text())
DRILLS = sorted(path.stem for path in (ROOT / "bench/drills").glob("*.py")
                if "def main(" in path.read_text())
# A figure as the benches print them: a number with its unit.
FIGURE = re.compile(
    r"\d[\d,]*(\.\d+)?\s*(ms|µs|s|req/s|texts/s|chunks/s|documents/s|KB|MiB|GiB|%)")
WORDS = ["protein", "cell", "tumour", "gene", "vaccine", "dose", "trial", "cohort", "mouse",
         "receptor", "signal", "pathway", "insulin", "glucose", "cancer", "therapy", "mutation",
         "virus", "antibody", "kinase"]


def beir_dataset(folder: Path, documents: int = 60, queries: int = 10) -> Path:
    """Write a small corpus in the BEIR layout the retrieval bench reads."""
    rng = random.Random(3)
    folder.mkdir()
    with (folder / "corpus.jsonl").open("w") as corpus:
        for n in range(documents):
            text = ". ".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(4)) + "."
            corpus.write(json.dumps({"_id": str(n), "title": f"Study {n}", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for n in range(queries):
            out.write(json.dumps({"_id": str(n), "text": " ".join(rng.choices(WORDS, k=5))}) + "\n")
    with (folder / "qrels.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n in range(queries):
            qrels.write(f"{n}\t{rng.randrange(documents)}\t1\n")
    return folder


def test_every_bench_and_drill_is_found() -> None:
    assert {"load", "providers", "retrieval", "summaries", "usage"} <= set(BENCHES)
    assert {"postgres_restart", "provider_outage", "redis_outage", "worker_kills"} <= set(DRILLS)


@pytest.mark.e2e
@pytest.mark.parametrize("name", BENCHES)
def test_the_bench_runs_to_its_end_at_smoke_size(name: str, tmp_path: Path) -> None:
    extra = (["--dataset", str(beir_dataset(tmp_path / "beir"))]
             if name in ("retrieval", "ingest", "first_text", "fusion_depth", "quantization",
                         "snippets")
             else [])
    done = subprocess.run([sys.executable, f"bench/{name}.py", "--smoke", *extra], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=240,
                          check=False)

    assert done.returncode == 0, done.stderr[-5000:]
    figures = [line for line in done.stdout.splitlines() if FIGURE.search(line)]
    assert len(figures) >= 2, done.stdout[-5000:]
    if name == "retrieval":  # its last line is its figures, for scripts to compare runs
        last = json.loads(done.stdout.splitlines()[-1])
        for mode in ("text", "hybrid", "vector"):
            assert {"p50_ms", "p95_ms"} <= last[mode].keys() <= last["small_workspace"][mode].keys()
        assert 0 <= last["small_workspace"]["vector"]["recall_at_10"] <= 1
        assert last["chunks"] == 300 and isinstance(last["small_workspace"]["full_k"], bool)
        assert {"p50_ms", "p95_ms"} == last["tantivy"].keys() == last["small_workspace"][
            "tantivy"].keys() == last["text_vs_tantivy"]["big"].keys()
        assert set(last["bytes_per_chunk"]) == {"text_index", "vectors", "rest"}
        assert all(size > 0 for size in last["bytes_per_chunk"].values())
        assert set(last["searches_per_s_4_searchers"]) == {"text", "vector", "hybrid"}
        assert last["build_s"] >= 0
    if name == "fusion_depth":
        last = json.loads(done.stdout.splitlines()[-1])
        assert set(last["by_depth"]) == {"100", "20"}
        for found in last["by_depth"].values():
            assert 0 <= found["ndcg_at_10"] <= 1 and 0 < found["p50_ms"] <= found["p95_ms"]
        assert last["by_depth"]["100"]["ndcg_vs_first"] == 0
    if name == "snippets":
        last = json.loads(done.stdout.splitlines()[-1])
        assert last["queries"] == 5 and 0 < last["hits"] <= 50
        for way in ("ts_headline", "python"):
            assert 0 < last[way]["p50_ms"] <= last[way]["p95_ms"]
        # Made-up sentences of plain words: every hit is marked as ts_headline marks it.
        assert last["same_marks"] == 1
    if name == "quantization":
        last = json.loads(done.stdout.splitlines()[-1])
        assert last["documents"] == 40 and last["queries"] == 5
        models = last["models"]
        assert set(models) == {"fp32", "int8", "int8 keeping down5_out",
                               "int8, in calls of 256 documents"}
        assert models["fp32"]["cos_mean"] == 1 and models["fp32"]["ndcg_vs_fp32"] == 0
        for model in set(models) - {"fp32"}:  # quantized: near full precision, not equal
            assert 0.95 < models[model]["cos_min"] <= models[model]["cos_mean"] < 0.99999
            low, high = models[model]["ndcg_vs_fp32_ci"]
            assert -1 <= low <= high <= 1
    if name == "ingest":
        last = json.loads(done.stdout.splitlines()[-1])
        assert last["documents"] == 20 and last["chunks"] >= 20
        for figure in ("bare_torch_docs_s", "bare_onnx_docs_s", "pipeline_docs_s",
                       "worker_rss_mb", "worker_rss_mb_torch", "query_embed_p50_ms"):
            assert last[figure] > 0, figure
        # Each stage is its own share of the profile: none below zero, the model's largest.
        stages = last["profile_s"]
        assert min(stages.values()) >= 0, stages
        assert max(stages, key=stages.get) == "embed (ONNX Runtime)", stages
        # And each names functions the pipeline still calls (uploads aside: there are none).
        assert all(seconds > 0 for stage, seconds in stages.items()
                   if stage != "parse uploads"), stages


@pytest.mark.parametrize("name", DRILLS)
def test_the_suite_runs_every_drill(name: str) -> None:
    """Drills run at their short size in tests/drills, each through run_drill."""
    runs = "".join(path.read_text() for path in (ROOT / "tests/drills").glob("test_*.py"))
    assert re.search(rf'run_drill\(\s*"{name}"', runs), f"no test runs the {name} drill"
