"""The upgrade to per-workspace text statistics counts what is already indexed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection

from aistack.retrieval.models import WorkspaceCorpus, WorkspaceTerm
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_upgrade_fills_each_workspaces_statistics_from_its_chunks(
    use_models: Callable[..., None], alice: User, bob: User
) -> None:
    use_models(embedding="scripted:hash")
    indexed(alice.personal_workspace, alice, "Deploys", "Deploys happen on Tuesdays.")
    indexed(alice.personal_workspace, alice, "Rollbacks", "Rollbacks need a reviewer. Deploys!")
    indexed(bob.personal_workspace, bob, "Pasta", "Spaghetti needs salted water.")
    terms = set(WorkspaceTerm.objects.filter(df__gt=0).values_list("workspace_id", "lexeme", "df"))
    corpus = set(WorkspaceCorpus.objects.values_list("workspace_id", "chunks", "length"))

    call_command("migrate", "retrieval", "0003", verbosity=0)
    with connection.cursor() as cursor:  # the shared counters of the previous release
        cursor.execute("SELECT lexeme, df FROM retrieval_term WHERE lexeme = 'deploy'")
        assert cursor.fetchall() == [("deploy", 2)]
    call_command("migrate", "retrieval", verbosity=0)

    assert set(WorkspaceTerm.objects.values_list("workspace_id", "lexeme", "df")) == terms
    assert set(WorkspaceCorpus.objects.values_list("workspace_id", "chunks", "length")) == corpus
    assert (alice.personal_workspace.pk, "deploy", 2) in terms
