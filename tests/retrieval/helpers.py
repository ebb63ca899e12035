"""Index documents synchronously through the real job code path."""

from __future__ import annotations

import math
import random
from collections import Counter

from django.contrib.auth.models import User
from django.db import connection

from aistack.accounts.models import Workspace
from aistack.documents.indexing import DOCUMENT_INDEX, document_index_run
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.services import job_claim
from aistack.retrieval.models import Chunk, ChunkVector
from aistack.retrieval.selectors import active_space
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


def synthetic_vectors(workspace: Workspace, count: int, rng: random.Random,
                      author: User) -> None:
    """Insert documents with one chunk and a random unit vector each (bulk, for scale)."""
    space = active_space()
    assert space is not None
    documents = Document.objects.bulk_create(
        Document(workspace=workspace, title=f"n{n}", content="x", content_hash="0" * 64,
                 author=author) for n in range(count))
    chunks = Chunk.objects.bulk_create(
        Chunk(document=d, workspace=workspace, ordinal=0, text=d.title, token_count=1,
              start_char=0, end_char=1, content_hash="0" * 64) for d in documents)
    ChunkVector.objects.bulk_create(
        ChunkVector(chunk=c, space=space, workspace=workspace, input_hash=str(c.pk),
                    embedding=unit(rng, space.dimensions)) for c in chunks)


def unit(rng: random.Random, width: int) -> list[float]:
    vector = [rng.gauss(0, 1) for _ in range(width)]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]
