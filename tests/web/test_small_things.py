"""The favicon, and the admin keeping hands off what the application writes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.services import document_create
from aistack.jobs.models import Job


def test_the_favicon_is_served_where_browsers_look(client: Client) -> None:
    icon = client.get("/favicon.ico", follow=True)

    assert icon.status_code == 200
    assert icon.redirect_chain and icon.redirect_chain[0][1] == 301
    assert icon["Content-Type"].startswith("image/svg+xml")
    page = client.get("/login/")
    assert b'rel="icon"' in page.content


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("staffer", password=None))
    return client


def test_jobs_chunks_and_ledger_rows_are_read_only_in_the_admin(staff: Client,
                                                                  alice: User) -> None:
    document = document_create(workspace=alice.personal_workspace, title="T", content="Text.",
                               author=alice)
    for model in ("jobs/job", "retrieval/chunk", "usage/usagerecord"):
        listing = staff.get(f"/admin/{model}/")
        assert listing.status_code == 200, model
        assert f'href="/admin/{model}/add/"'.encode() not in listing.content, model
        assert staff.get(f"/admin/{model}/add/").status_code == 403, model
    job = Job.objects.get(kind=DOCUMENT_INDEX.name, object_id=document.pk)
    view = staff.get(f"/admin/jobs/job/{job.pk}/change/")
    assert view.status_code == 200
    assert b'name="_save"' not in view.content
    assert staff.post(f"/admin/jobs/job/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Job.objects.filter(pk=job.pk).exists()
