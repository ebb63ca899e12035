"""Benchmark: search snippets made in Python (``aistack.retrieval.snippets``) against
PostgreSQL's ``ts_headline``, on the same hits, side by side in one run.

Run from the repository root: ``python bench/snippets.py [--dataset DIR]``. Loads a BEIR
folder's documents (SciFact by default) into a table of a scratch PostgreSQL, takes
each query's 10 best documents by PostgreSQL's own text ranking (untimed), then times,
query by query and in turns, the two ways of making those 10 snippets, each from the
texts in the table: ``ts_headline`` (two fragments of up to 40 words, matches marked)
in the query, and the texts and the query's lexemes read by the query and the snippets
made here. Also counts the hits whose marked words, in order, are the very words
``ts_headline`` marks when it marks every match of the whole text. Prints p50 and p95
per query of 10 hits after an untimed pass; its last line is its figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from common import bench_arguments, django_on_embedded_services, median, percentile

HITS = 10
ROUNDS = 3
_QUERY = ("(SELECT coalesce(string_agg(quote_literal(u.lexeme), ' | '), '')::tsquery "
          "FROM unnest(to_tsvector('english', %(query)s)) u)")
_LEXEMES = "(SELECT array_agg(DISTINCT u.lexeme) FROM unnest(to_tsvector('english', %(query)s)) u)"
# Composed from the constants above: no input reaches them but through parameters.
_HITS_SQL = (f"SELECT id FROM passage WHERE terms @@ {_QUERY}"  # noqa: S608
             f" ORDER BY ts_rank(terms, {_QUERY}) DESC, id LIMIT {HITS}")
_HEADLINE_SQL = (f"SELECT ts_headline('english', p.text, {_QUERY}, %(options)s) "  # noqa: S608
                 "FROM unnest(%(ids)s::int[]) WITH ORDINALITY r(id, n) "
                 "JOIN passage p USING (id) ORDER BY r.n")
_TEXTS_SQL = (f"SELECT p.text, {_LEXEMES} "  # noqa: S608
              "FROM unnest(%(ids)s::int[]) WITH ORDINALITY r(id, n) "
              "JOIN passage p USING (id) ORDER BY r.n")
_EVERY_MATCH_SQL = (f"SELECT p.text, ts_headline('english', p.text, {_QUERY}, "  # noqa: S608
                    f"'HighlightAll=true, StartSel=\x02, StopSel=\x03'), {_LEXEMES} "
                    "FROM unnest(%(ids)s::int[]) r(id) JOIN passage p USING (id)")
_HEADLINE_OPTIONS = ('StartSel=\x02, StopSel=\x03, MaxWords=40, MinWords=15, MaxFragments=2, '
                     'FragmentDelimiter=" … "')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    parser.add_argument("--queries", type=int, default=300)
    args = bench_arguments(parser, queries=5)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    stop = django_on_embedded_services(home)
    try:
        from django.db import connection

        from aistack.evaluation import dataset_load
        from aistack.retrieval.snippets import Matcher

        dataset = dataset_load(args.dataset)
        texts = [text or title for title, text in dataset.corpus.values()]
        queries = list(dataset.queries.values())[:args.queries]
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE passage (id int PRIMARY KEY, text text, "
                           "terms tsvector)")
            cursor.execute("INSERT INTO passage SELECT n - 1, t, to_tsvector('english', t) "
                           "FROM unnest(%s::text[]) WITH ORDINALITY u(t, n)", [texts])
            cursor.execute("CREATE INDEX ON passage USING gin (terms)")
            hits = []
            for query in queries:
                cursor.execute(_HITS_SQL, {"query": query})
                hits.append([row[0] for row in cursor.fetchall()])

        def by_postgresql(query: str, ids: list[int]) -> list[str]:
            with connection.cursor() as cursor:
                cursor.execute(_HEADLINE_SQL, {"query": query, "ids": ids,
                                               "options": _HEADLINE_OPTIONS})
                return [row[0] for row in cursor.fetchall()]

        def by_python(query: str, ids: list[int]) -> list[str]:
            with connection.cursor() as cursor:
                cursor.execute(_TEXTS_SQL, {"query": query, "ids": ids})
                rows = cursor.fetchall()
            matcher = Matcher(rows[0][1] or () if rows else ())
            return [matcher.snippet(text) for text, _ in rows]

        ways = {"ts_headline": by_postgresql, "python": by_python}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for timed in [False] + [True] * ROUNDS:
            for query, ids in zip(queries, hits, strict=True):
                for name, way in ways.items():
                    started = time.perf_counter()
                    way(query, ids)
                    if timed:
                        times[name].append((time.perf_counter() - started) * 1000)

        agreeing = total = 0
        with connection.cursor() as cursor:
            for query, ids in zip(queries, hits, strict=True):
                cursor.execute(_EVERY_MATCH_SQL, {"query": query, "ids": ids})
                rows = cursor.fetchall()
                matcher = Matcher(rows[0][2] or () if rows else ())
                for text, everything, _ in rows:
                    theirs = [word.lower() for word in re.findall("\x02(.*?)\x03", everything)]
                    ours = [text[start:end].lower() for start, end, _ in matcher.matches(text)]
                    agreeing += ours == theirs
                    total += 1
    finally:
        stop()
        shutil.rmtree(home, ignore_errors=True)

    figures = {name: {"p50_ms": round(median(values), 3),
                      "p95_ms": round(percentile(values, 0.95), 3)}
               for name, values in times.items()}
    print(f"{len(queries)} queries of {HITS} hits over {len(texts):,} documents, "
          f"{ROUNDS} timed rounds")
    for name, found in figures.items():
        print(f"  {name:12} p50 {found['p50_ms']:.2f} ms   p95 {found['p95_ms']:.2f} ms")
    ratio = figures["ts_headline"]["p50_ms"] / figures["python"]["p50_ms"]
    print(f"  python is {ratio:.2f}x as fast at the median")
    print(f"  marked words as ts_headline marks them: {agreeing:,} of {total:,} hits "
          f"({100 * agreeing / max(total, 1):.1f}%)")
    print(json.dumps({"queries": len(queries), "hits": total, **figures,
                      "speedup_p50": round(ratio, 2),
                      "same_marks": round(agreeing / max(total, 1), 4)}))


if __name__ == "__main__":
    main()
