"""Time to first visible text in the browser: Ask and Chat, built-in models, 100 documents.

    python bench/first_text.py [--documents 100] [--questions 30] [--dataset ../shared/data/scifact]

Starts ``aistack serve`` in a scratch home with its defaults (the extractive chat model and
MiniLM int8 embeddings, run by the worker), creates the documents through the API (SciFact
abstracts that answer SciFact's questions) and waits until each is indexed and summarized.
Then Chromium (Debian's, through Playwright) signs in and asks each question on the Ask
page and in a Chat conversation, pressing Enter as a user does. The page itself times, with
``performance.now()``, the key press and the moment the first characters of the answer are
in the page (a MutationObserver), and the moment the answer is complete. Three warm-up
questions are left out. Ends with one JSON line of medians and 95th percentiles in ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import bench_arguments, percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (
    aistack,
    clean_env,
    free_port,
    http,
    run_aistack,
    stop_or_kill,
    wait_for,
    wait_http_ok,
)

PASSWORD = "first-text bench password"  # noqa: S105 (a scratch user)
WARM_UP = 3
# Installed on each page: records when Enter is pressed, when the answer's first text
# shows, and when the answer is done.
TIMER = """
([answer, finished]) => {
  window.__times = {};
  document.addEventListener("keydown", (pressed) => {
    if (pressed.key === "Enter" && !pressed.shiftKey) {
      window.__times = {pressed: performance.now(),
                        before: document.querySelectorAll(finished).length};
    }
  }, true);
  new MutationObserver(() => {
    const times = window.__times;
    if (times.pressed === undefined) return;
    const answers = document.querySelectorAll(answer);
    const last = answers[answers.length - 1];
    if (times.first === undefined && last && last.textContent.trim()) {
      times.first = performance.now();
    }
    // Done once more answers are finished than when it was asked (an answer that was
    // finished and is reset for the new question counts as not finished).
    const count = document.querySelectorAll(finished).length;
    times.before = Math.min(times.before, count);
    if (times.done === undefined && count > times.before) times.done = performance.now();
  }).observe(document.body, {childList: true, characterData: true, subtree: true,
                             attributes: true});
}
"""


def workload(dataset: Path, documents: int, questions: int) -> tuple[list[dict[str, str]],
                                                                      list[str]]:
    """Return SciFact abstracts and questions that they answer."""
    corpus = {row["_id"]: row for row in map(json.loads, (dataset / "corpus.jsonl").open())}
    queries = {row["_id"]: row["text"]
               for row in map(json.loads, (dataset / "queries.jsonl").open())}
    relevant: dict[str, list[str]] = defaultdict(list)
    qrels = dataset / "qrels.tsv"
    for line in qrels.open() if qrels.exists() else ():
        query, document, *_ = line.split("\t")
        if query in queries and document in corpus:
            relevant[query].append(document)
    if not relevant:  # no judgements: any question, any documents
        relevant = {query: [] for query in queries}
    chosen: list[str] = []
    asked: list[str] = []
    for query, found in relevant.items():
        if len(chosen) + len(found) > documents:
            break
        chosen.extend(d for d in found if d not in chosen)
        asked.append(queries[query])
    # The rest of the documents: abstracts no question is about, as a real corpus has.
    chosen.extend(d for d in corpus if d not in chosen)
    picked = [{"title": corpus[d]["title"], "content": corpus[d]["text"]}
              for d in chosen[:documents]]
    return picked, asked[:questions + WARM_UP]


def seed(base: str, token: str, documents: list[dict[str, str]]) -> None:
    def create(document: dict[str, str]) -> None:
        status, body = http("POST", f"{base}/api/v1/documents", token=token, body=document,
                            timeout=60)
        assert status == 201, body

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, documents))

    def processed() -> bool:
        status, body = http("GET", f"{base}/api/v1/documents?limit=100", token=token, timeout=60)
        return status == 200 and body["count"] == len(documents) and all(
            d["embedding_status"] == "complete" and d["summary_status"] == "complete"
            for d in body["items"])

    wait_for(processed, timeout=900, interval=1.0, message="the documents to be processed")


def measure(page: Any, *, ask: Any, answer: str, finished: str) -> dict[str, Any]:
    """Ask, and return how long the first text and the whole answer took to show."""
    page.evaluate(TIMER, [answer, finished])
    ask()
    times = wait_for(lambda: (found := page.evaluate("window.__times")).get("done") and found,
                     timeout=60, interval=0.05, message="the answer")
    return {"first_ms": times["first"] - times["pressed"],
            "complete_ms": times["done"] - times["pressed"]}


def browse(base: str, questions: list[str]) -> dict[str, list[dict[str, Any]]]:
    from playwright.sync_api import expect, sync_playwright

    results: dict[str, list[dict[str, Any]]] = {"ask": [], "chat": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        page = browser.new_page()
        page.goto(f"{base}/login/")
        page.get_by_label("Username").fill("bench")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Documents")).to_be_visible()

        page.goto(f"{base}/ask/")
        box = page.get_by_label("Your question")
        for question in questions:
            box.fill(question)
            run = measure(page, ask=lambda: box.press("Enter"), answer="#answer-text",
                          finished='#answer[data-state="done"]')
            run["cited"] = page.locator("#sources").is_visible()
            results["ask"].append(run)

        page.goto(f"{base}/chat/")
        message = page.get_by_label("Message")
        for question in questions:
            message.fill(question)
            run = measure(page, ask=lambda: message.press("Enter"),
                          answer=".turn.assistant .text", finished=".turn.assistant .model")
            run["cited"] = page.locator(".turn.assistant").last.locator(".citations").count() > 0
            results["chat"].append(run)
        browser.close()
    return {name: runs[WARM_UP:] for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    arguments = bench_arguments(parser, documents=10, questions=2)
    documents, questions = workload(arguments.dataset, arguments.documents, arguments.questions)

    home = Path(tempfile.mkdtemp(prefix="aistack-first-text-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(AISTACK_HOME=str(home), LOG_LEVEL="WARNING",
                    AI_RATE_LIMIT="1000000/minute", WRITE_RATE_LIMIT="1000000/minute")
    log = home / "serve.log"
    process = aistack("serve", "--port", str(port), env=env, log=log)
    try:
        wait_http_ok(f"{base}/healthz", timeout=180, process=process, log=log)
        token = run_aistack("createuser", "bench", "--password", PASSWORD,
                            env=env).strip().splitlines()[-1]
        seed(base, token, documents)
        print(f"{len(documents)} documents indexed and summarized; "
              f"{len(questions) - WARM_UP} questions after {WARM_UP} to warm up")
        results = browse(base, questions)
    finally:
        stop_or_kill(process, timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    figures: dict[str, Any] = {"documents": len(documents)}
    for name, runs in results.items():
        # Answers that quote and cite passages, not "I don't know" (which needs no model).
        figures[f"{name}_cited"] = sum(bool(run["cited"]) for run in runs)
        for measure_name in ("first_ms", "complete_ms"):
            values = [run[measure_name] for run in runs]
            figures[f"{name}_{measure_name}_p50"] = round(statistics.median(values), 1)
            figures[f"{name}_{measure_name}_p95"] = round(percentile(values, 0.95), 1)
        print(f"{name}: first text p50 {figures[f'{name}_first_ms_p50']:.0f} ms, "
              f"p95 {figures[f'{name}_first_ms_p95']:.0f} ms; complete p50 "
              f"{figures[f'{name}_complete_ms_p50']:.0f} ms ({len(runs)} questions, "
              f"{figures[f'{name}_cited']} answered with citations)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
