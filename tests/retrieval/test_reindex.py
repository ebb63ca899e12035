"""Switching the embedding model: no mixed vectors, search serves until the switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User

from aistack.retrieval.models import ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.retrieval.reindex import reindex_run
from aistack.retrieval.selectors import SearchMode, active_space
from aistack.retrieval.services import search
from aistack.usage.models import UsageRecord
from aistack.usage.types import Attribution
from tests.retrieval.helpers import indexed

OLD, NEW = "local:all-MiniLM-L6-v2-int8", "scripted:hash"


def vectors_by_model() -> dict[str, int]:
    return {space.model: ChunkVector.objects.filter(space=space).count()
            for space in EmbeddingSpace.objects.all()}


def last_query_model() -> str:
    return UsageRecord.objects.filter(feature="search").latest("pk").model


def test_reindex_builds_the_new_space_beside_the_old_then_switches(
    alice: User, use_models: Callable[..., None], django_capture_on_commit_callbacks: Any
) -> None:
    workspace = alice.personal_workspace
    first = indexed(workspace, alice, "Vacation", "Employees get 25 days of paid vacation.")
    assert active_space().model == OLD  # type: ignore[union-attr]

    use_models(embedding=NEW)
    second = indexed(workspace, alice, "Parking", "Parking permits renew every January.")

    # Until a switch starts, documents get vectors of the model search uses alone.
    assert vectors_by_model() == {OLD: 2}
    hits = search(workspace_ids=[workspace.pk], query="holidays", k=2, mode=SearchMode.VECTOR,
                  attribution=Attribution(feature="search"))
    assert hits[0].document_id == first.pk
    assert last_query_model() == OLD

    progressed: list[int] = []
    # Search caches the active space; the switch rewrites the entry once it commits.
    with django_capture_on_commit_callbacks(execute=True):
        assert reindex_run(progress=progressed.append) is True

    assert sum(progressed) == 2
    assert active_space().model == NEW  # type: ignore[union-attr]
    # The old space is retired; its vectors stay while a search may still read them.
    old = EmbeddingSpace.objects.get(model=OLD)
    assert old.status == SpaceStatus.RETIRED and old.retired_at is not None
    assert vectors_by_model() == {OLD: 2, NEW: 2}
    hits = search(workspace_ids=[workspace.pk], query="parking", k=2, mode=SearchMode.VECTOR,
                  attribution=Attribution(feature="search"))
    assert {hit.document_id for hit in hits} == {first.pk, second.pk}
    assert last_query_model() == NEW
    # Running it again has nothing to do.
    assert reindex_run(progress=progressed.append) is True
    assert sum(progressed) == 2


def test_switching_back_builds_the_old_model_a_new_space(
    alice: User, use_models: Callable[..., None]
) -> None:
    indexed(alice.personal_workspace, alice, "Vacation", "Employees get 25 days of vacation.")
    first = active_space()
    use_models(embedding=NEW)
    assert reindex_run(progress=lambda n: None)
    use_models(embedding=OLD)

    assert reindex_run(progress=lambda n: None)

    # (Read directly: this test's transaction never commits, so search's cached entry
    # for the active space is never rewritten.)
    again = EmbeddingSpace.objects.get(status=SpaceStatus.ACTIVE)
    assert first is not None
    assert again.model == OLD and again.pk != first.pk
    assert ChunkVector.objects.filter(space=again).count() == 1
    assert EmbeddingSpace.objects.get(pk=first.pk).status == SpaceStatus.RETIRED


