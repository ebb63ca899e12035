"""Text-search scores depend only on what the caller may read.

Were corpus statistics shared across workspaces, a user could learn whether a guessed
word occurs in workspaces they cannot read, and roughly how often, by watching their
own scores move as others write.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from aistack.documents.services import document_delete, document_update
from aistack.retrieval.selectors import SearchMode
from aistack.retrieval.services import search
from aistack.usage.types import Attribution
from tests.retrieval.helpers import index_now, indexed

pytestmark = pytest.mark.django_db(transaction=True)

ATTRIBUTION = Attribution(feature="search")
CODE_NAME = "Bluefin"


@pytest.fixture
def models(use_models: Callable[..., None]) -> None:
    use_models(embedding="scripted:hash")


def scores(user: User) -> list[tuple[int, float]]:
    """Bob's text and hybrid results for the code name, with their exact scores."""
    found = []
    for mode in (SearchMode.TEXT, SearchMode.HYBRID):
        found += [(hit.chunk_id, hit.score) for hit in search(
            workspace_ids=[user.personal_workspace.pk], query=f"project {CODE_NAME}", k=10,
            mode=mode, attribution=ATTRIBUTION)]
    return found


def test_a_score_does_not_move_when_another_workspace_writes(
    models: None, alice: User, bob: User
) -> None:
    indexed(bob.personal_workspace, bob, "Customers",
            f"Project {CODE_NAME} ships in March. The rest is routine.")
    indexed(bob.personal_workspace, bob, "Notes", "Nothing about any project here.")
    before = scores(bob)
    assert before and before[0][1] > 0

    # Alice writes about the code name in her own workspace: five documents, an edit,
    # a delete.
    hers = [indexed(alice.personal_workspace, alice, f"Plan {n}",
                    f"{CODE_NAME} {CODE_NAME} project plan, part {n}.") for n in range(5)]
    assert scores(bob) == before
    document_update(document=hers[0], content=f"{CODE_NAME} everywhere: {CODE_NAME}!")
    index_now(hers[0])
    assert scores(bob) == before
    document_delete(document=hers[1])
    assert scores(bob) == before

    # His own writing does move them: the statistics are his workspace's.
    indexed(bob.personal_workspace, bob, "More", f"{CODE_NAME} again.")
    assert scores(bob) != before


def test_a_term_in_most_chunks_still_scores_above_zero(models: None, bob: User) -> None:
    only = indexed(bob.personal_workspace, bob, "Runbook", "Restart the service.")

    hits = search(workspace_ids=[bob.personal_workspace.pk], query="restart service", k=5,
                  mode=SearchMode.TEXT, attribution=ATTRIBUTION)

    assert [hit.document_id for hit in hits] == [only.pk]
    assert hits[0].score > 0
