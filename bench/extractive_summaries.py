"""The built-in model's summaries of real documents, and the time each takes.

    python bench/extractive_summaries.py [FILE ...] [--scifact ../shared/data/scifact]
                                         [--scifact-ids 4983] [--rounds 5]

Each file (Markdown, text, PDF, Word...) is parsed as an upload is, and summarized the
way the summary job asks the default model, ``local:extractive``, in this process. With no
files, the demo's documents. ``--scifact`` adds SciFact abstracts by id. Prints each
summary and the median time of ``--rounds`` summaries after one warm-up (the model loaded).
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import bench_arguments, median

ROOT = Path(__file__).resolve().parents[1]
DEMO = sorted((ROOT / "src/aistack/documents/demo_documents").glob("*.md"))


def _documents(arguments: argparse.Namespace) -> list[tuple[str, str]]:
    from aistack.documents.parsing import detect_kind, parse

    found = []
    for path in arguments.files or DEMO:
        data = path.read_bytes()
        kind = detect_kind(filename=path.name, content_type=None, head=data[:4096])
        found.append((path.name, parse(data=data, kind=kind, max_chars=5_000_000).text))
    if arguments.scifact:
        wanted = set(arguments.scifact_ids.split(","))
        with (arguments.scifact / "corpus.jsonl").open() as corpus:
            for line in corpus:
                row = json.loads(line)
                if row["_id"] in wanted:
                    found.append((f"scifact:{row['_id']}", f"{row['title']}\n\n{row['text']}"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--scifact", type=Path)
    parser.add_argument("--scifact-ids", default="4983")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = bench_arguments(parser, rounds=1)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")
    sys.path.insert(0, str(ROOT / "src"))
    import django

    django.setup()
    from aistack.ai.backends.local import EXTRACTIVE_MODEL, ChatModel
    from aistack.ai.types import ChatRequest
    from aistack.documents.summaries import SUMMARY_PROMPT

    model = ChatModel(alias="default", model=EXTRACTIVE_MODEL, options={})
    figures = []
    for name, text in _documents(arguments):
        request = ChatRequest(messages=SUMMARY_PROMPT.render(content=text), context=(text,),
                              task="summarize")
        summary = model.complete(request, timeout=60).text
        times = []
        for _ in range(arguments.rounds):
            started = time.perf_counter()
            model.complete(request, timeout=60)
            times.append((time.perf_counter() - started) * 1000)
        figures.append({"document": name, "words": len(text.split()),
                        "summary_ms_median": round(median(times), 1),
                        "summary_words": len(summary.split())})
        print(f"## {name}: {len(text.split()):,} words, {median(times):.1f} ms per summary "
              f"(median of {arguments.rounds})\n{summary}\n")
    print(json.dumps({"summaries": figures}))


if __name__ == "__main__":
    main()
