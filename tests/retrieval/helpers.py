"""Index documents synchronously through the real job code path."""

from __future__ import annotations

import math
from collections import Counter

from django.contrib.auth.models import User
from django.db import connection

from aistack.accounts.models import Workspace
from aistack.documents.indexing import DOCUMENT_INDEX, document_index_run
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.services import job_claim
from aistack.retrieval.textrank import BM25_B, BM25_K1


def index_now(document: Document) -> Document:
    """Run the document's pending index job in this process."""
    run = job_claim(kind=DOCUMENT_INDEX, object_id=document.pk)
    assert run is not None, "no pending index job"
    document_index_run(run=run)
    document.refresh_from_db()
    return document


def indexed(workspace: Workspace, author: User | None, title: str, content: str) -> Document:
    return index_now(document_create(workspace=workspace, title=title, content=content,
                                     author=author))


def bm25_reference(query: str, workspace_ids: list[int]) -> dict[int, float]:
    """BM25 over the workspaces' own chunks, computed in Python from the chunks' stored
    terms, independently of the text index and of the statistics it keeps."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', %s))", [query])
        query_terms = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT c.id, c.term_count, u.lexeme, cardinality(u.positions) "
                       "FROM retrieval_chunk c, unnest(c.search_vector) u "
                       "WHERE c.workspace_id = ANY(%s)", [workspace_ids])
        rows = cursor.fetchall()
    term_counts: dict[int, int] = {}
    tfs: dict[int, Counter[str]] = {}
    for chunk_id, length, lexeme, tf in rows:
        term_counts[chunk_id] = length
        tfs.setdefault(chunk_id, Counter())[lexeme] = tf
    n = len(term_counts)
    avgdl = sum(term_counts.values()) / n if n else 1.0
    df = Counter(lexeme for counter in tfs.values() for lexeme in counter)
    scores = {}
    for chunk_id, counter in tfs.items():
        matched = query_terms & counter.keys()
        if not matched:
            continue
        scores[chunk_id] = sum(
            math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * counter[t] * (BM25_K1 + 1)
            / (counter[t] + BM25_K1 * (1 - BM25_B + BM25_B * term_counts[chunk_id] / avgdl))
            for t in matched
        )
    return scores
