"""A large document is embedded by several part jobs and completes when all parts have."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.ai.backends import scripted
from aistack.ai.exceptions import Rejected
from aistack.documents.indexing import DOCUMENT_INDEX, DOCUMENT_INDEX_PART
from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.retrieval.chunking import chunk_text
from aistack.retrieval.models import Chunk, ChunkVector, IndexPart, StagedVector
from aistack.usage.models import UsageRecord
from harness import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PARTS_OF = 3
# Thirty paragraphs of about 60 tokens: several chunks, so several parts.
CONTENT = "\n\n".join(
    f"Section {n}. " + "The release train leaves on Tuesday and every service rides it. " * 5
    for n in range(30)
)


@pytest.fixture
def small_parts(settings: Any, use_models: Callable[..., None]) -> None:
    settings.INDEX_PART_INPUTS = PARTS_OF
    use_models(embedding="scripted:hash")


def settled(document: Document) -> bool:
    document.refresh_from_db()
    return document.embedding_status in {JobStatus.COMPLETE, JobStatus.FAILED}


def part_jobs() -> list[Job]:
    return list(Job.objects.filter(kind=DOCUMENT_INDEX_PART.name))


def test_a_large_document_is_embedded_in_parts_then_stored_at_once(
    small_parts: None, celery_worker: Any, alice: User
) -> None:
    expected = len(chunk_text(CONTENT))
    assert expected > 2 * PARTS_OF

    document = document_create(workspace=alice.personal_workspace, title="Trains",
                               content=CONTENT, author=alice)
    wait_for(lambda: settled(document), message="indexing in parts")

    assert document.embedding_status == JobStatus.COMPLETE
    assert Chunk.objects.filter(document=document).count() == expected
    assert ChunkVector.objects.filter(chunk__document=document).count() == expected
    # Each part embedded its own slice, once: one model call per part, none by the
    # index job itself, which found every vector staged.
    calls = [call for call in scripted.calls() if call.operation == "embed"]
    assert sorted(len(call.messages) for call in calls) == sorted(
        [PARTS_OF] * (expected // PARTS_OF) + ([expected % PARTS_OF] if expected % PARTS_OF
                                               else []))
    assert UsageRecord.objects.filter(feature="embedding", object_id=document.pk).count() == len(
        calls)
    # The parts are cleaned up with their staged vectors and jobs.
    assert not IndexPart.objects.exists()
    assert not StagedVector.objects.exists()
    assert part_jobs() == []
    assert Job.objects.get(kind=DOCUMENT_INDEX.name, object_id=document.pk).owner == ""


def test_an_edit_while_parts_run_is_what_gets_stored(
    small_parts: None, celery_worker: Any, alice: User
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Trains",
                               content=CONTENT, author=alice)
    wait_for(lambda: IndexPart.objects.filter(document=document).exists(), message="parts")
    edited = CONTENT.replace("Tuesday", "Thursday")
    document_update(document=document, content=edited)

    wait_for(lambda: settled(document)
             and Chunk.objects.filter(document=document, text__contains="Thursday").exists(),
             message="re-indexing")

    texts = list(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert texts == [spec.text for spec in chunk_text(edited)]
    assert not any("Tuesday" in text for text in texts)
    assert ChunkVector.objects.filter(chunk__document=document).count() == len(texts)
    assert not IndexPart.objects.exists() and part_jobs() == []


def test_a_part_that_fails_fails_the_document_with_its_reason(
    small_parts: None, celery_worker: Any, alice: User
) -> None:
    scripted.script("hash", Rejected("The input was refused.", provider="scripted",
                                     status_code=400))
    document = document_create(workspace=alice.personal_workspace, title="Trains",
                               content=CONTENT, author=alice)

    wait_for(lambda: settled(document), message="failure")

    assert document.embedding_status == JobStatus.FAILED
    assert "The input was refused." in document.embedding_error
    assert not Chunk.objects.filter(document=document).exists()
    assert not IndexPart.objects.exists() and not StagedVector.objects.exists()
    assert part_jobs() == []


def test_a_small_document_is_not_split(small_parts: None, celery_worker: Any,
                                       alice: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Short",
                               content="Deploys happen on Tuesdays.", author=alice)
    wait_for(lambda: settled(document), message="indexing")

    assert document.embedding_status == JobStatus.COMPLETE
    assert Job.objects.filter(kind=DOCUMENT_INDEX_PART.name).count() == 0
    assert Chunk.objects.filter(document=document).count() == 1
