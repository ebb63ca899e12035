"""Jobs queued before they knew their workspace take their document's on upgrade."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from aistack.documents.services import document_create
from aistack.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_upgrade_gives_old_jobs_their_documents_workspace(alice: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Old", content="Text.",
                               author=alice)
    Job.objects.update(workspace_id=None)  # as jobs queued before the column was
    call_command("migrate", "documents", "0003", verbosity=0)
    call_command("migrate", "documents", verbosity=0)

    assert set(Job.objects.filter(object_id=document.pk).values_list("workspace_id",
                                                                     flat=True)) == {
        alice.personal_workspace.pk}
