"""The web pages through Django's test client: forms, permissions, workspaces, errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory

from aistack.accounts.models import Membership, Role, Workspace
from aistack.accounts.services import user_create
from aistack.ai.backends import scripted
from aistack.ai.exceptions import RateLimited, Unavailable
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.web.errors import server_error
from tests.retrieval.helpers import indexed

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def working_in(user: User, workspace: Workspace) -> Client:
    client = signed_in(user)
    response = client.post("/workspace/", {"workspace": workspace.pk, "next": "/documents/"})
    assert response.status_code == 302
    return client


def test_the_login_form_shows_its_error_then_logs_in(alice: User) -> None:
    client = Client()
    assert client.get("/documents/")["Location"] == "/login/?next=/documents/"

    wrong = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert wrong.status_code == 200
    assert "Please enter a correct username and password" in wrong.content.decode()

    right = client.post("/login/", {"username": "alice", "password": PASSWORD,
                                    "next": "/documents/"})
    assert right.status_code == 302
    assert right["Location"] == "/documents/"
    assert "Documents" in client.get("/documents/").content.decode()


def test_creating_a_document_shows_field_errors_until_it_is_valid(alice: User) -> None:
    client = signed_in(alice)

    empty = client.post("/documents/new/", {"title": "", "content": ""})
    assert empty.status_code == 422
    assert empty.content.decode().count("This field is required.") == 2
    blank = client.post("/documents/new/", {"title": "Notes", "content": "   "})
    assert blank.status_code == 422
    assert "Content is required." in blank.content.decode()
    assert not Document.objects.exists()

    created = client.post("/documents/new/", {"title": "Notes\x07",
                                              "content": "Standup\x02 at\tten.\x1b\n"})
    document = Document.objects.get()
    # Control characters go, as through the API; tabs and line breaks stay.
    assert (document.title, document.content) == ("Notes", "Standup at\tten.\n")
    assert created["Location"] == f"/documents/{document.pk}/"
    assert document.workspace == alice.personal_workspace
    assert document.author == alice


def test_editing_and_deleting_a_document_take_a_confirmation(alice: User) -> None:
    client = signed_in(alice)
    document = document_create(workspace=alice.personal_workspace, title="Notes",
                               content="Standup at ten.", author=alice)

    edited = client.post(f"/documents/{document.pk}/edit/",
                         {"title": "Meeting notes", "content": "Standup at half past nine."})
    assert edited.status_code == 302
    document.refresh_from_db()
    assert (document.title, document.content) == ("Meeting notes", "Standup at half past nine.")

    confirm = client.get(f"/documents/{document.pk}/delete/")
    assert "It cannot be undone." in confirm.content.decode()
    assert Document.objects.filter(pk=document.pk).exists()
    deleted = client.post(f"/documents/{document.pk}/delete/")
    assert deleted["Location"] == "/documents/"
    assert not Document.objects.filter(pk=document.pk).exists()


def test_the_list_filters_by_title_and_pages(alice: User) -> None:
    for n in range(23):
        document_create(workspace=alice.personal_workspace, title=f"Report {n:02d}",
                        content="Numbers.", author=alice)
    document_create(workspace=alice.personal_workspace, title="Roadmap", content="Plans.",
                    author=alice)
    client = signed_in(alice)

    first = client.get("/documents/").content.decode()
    assert "24 documents" in first
    assert "Roadmap" in first
    assert "Page 1 of 2" in first
    second = client.get("/documents/?page=2").content.decode()
    assert "Report 00" in second
    assert "Roadmap" not in second
    filtered = client.get("/documents/?title=road").content.decode()
    assert "1 document with “road” in the title" in filtered
    assert "Report" not in filtered.split('id="document-list"')[1]


def test_the_workspace_switcher_keeps_the_choice_in_the_session(
    alice: User, bob: User, shared_workspace: Workspace
) -> None:
    document_create(workspace=shared_workspace, title="Team plan", content="Ship it.",
                    author=alice)
    document_create(workspace=alice.personal_workspace, title="My notes", content="Mine.",
                    author=alice)
    client = signed_in(alice)
    assert "My notes" in client.get("/documents/").content.decode()

    switched = client.post("/workspace/", {"workspace": shared_workspace.pk,
                                           "next": "/search/"})
    assert switched["Location"] == "/search/"
    page = client.get("/documents/").content.decode()
    assert "Team plan" in page
    assert "My notes" not in page

    outsider = user_create(username="carol", password=PASSWORD)
    foreign = client.post("/workspace/", {"workspace": outsider.personal_workspace.pk})
    assert foreign.status_code == 404
    offsite = client.post("/workspace/", {"workspace": shared_workspace.pk,
                                          "next": "https://evil.example/"})
    assert offsite["Location"] == "/documents/"


def test_viewers_see_no_edit_controls_and_their_edits_are_refused(
    alice: User, bob: User, shared_workspace: Workspace
) -> None:
    document = document_create(workspace=shared_workspace, title="Team plan",
                               content="Ship it.", author=alice)
    client = working_in(bob, shared_workspace)

    listing = client.get("/documents/").content.decode()
    assert "Team plan" in listing
    assert "New document" not in listing
    assert "Upload files" not in listing
    page = client.get(f"/documents/{document.pk}/").content.decode()
    assert f"/documents/{document.pk}/edit/" not in page
    assert f"/documents/{document.pk}/delete/" not in page

    refused = client.post(f"/documents/{document.pk}/edit/",
                          {"title": "Hijacked", "content": "Gone."})
    assert refused.status_code == 403
    assert "You can&#x27;t do that here" in refused.content.decode()
    assert client.post(f"/documents/{document.pk}/delete/").status_code == 403
    assert client.get("/documents/new/").status_code == 403
    assert client.post("/documents/upload/").status_code == 403
    document.refresh_from_db()
    assert document.title == "Team plan"


def test_owners_invite_change_and_remove_members(alice: User, bob: User) -> None:
    client = signed_in(alice)
    workspace = alice.personal_workspace

    unknown = client.post("/members/invite/", {"username": "nobody", "role": "editor"})
    assert unknown.status_code == 422
    assert "No user has this username." in unknown.content.decode()

    invited = client.post("/members/invite/", {"username": "bob", "role": "editor"})
    assert invited["Location"] == "/members/"
    membership = Membership.objects.get(workspace=workspace, user=bob)
    assert membership.role == Role.EDITOR
    again = client.post("/members/invite/", {"username": "bob", "role": "viewer"})
    assert "This user is already a member." in again.content.decode()

    # An htmx request gets the members section alone, to swap in.
    changed = client.post(f"/members/{membership.pk}/role/", {"role": "viewer"},
                          headers={"HX-Request": "true"})
    assert changed.status_code == 200
    assert changed.content.decode().lstrip().startswith('<div id="members">')
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER

    removed = client.post(f"/members/{membership.pk}/remove/")
    assert removed.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_a_workspace_keeps_an_owner_and_only_owners_manage_it(
    alice: User, bob: User, shared_workspace: Workspace
) -> None:
    owner = Membership.objects.get(workspace=shared_workspace, user=alice)
    client = working_in(alice, shared_workspace)

    demoted = client.post(f"/members/{owner.pk}/role/", {"role": "editor"})
    assert demoted.status_code == 422
    assert "A workspace needs an owner" in demoted.content.decode()
    assert client.post(f"/members/{owner.pk}/remove/").status_code == 422
    owner.refresh_from_db()
    assert owner.role == Role.OWNER

    viewer = working_in(bob, shared_workspace)
    assert viewer.get("/members/").status_code == 403
    assert viewer.post("/members/invite/", {"username": "bob", "role": "owner"}).status_code == 403
    assert Membership.objects.get(workspace=shared_workspace, user=bob).role == Role.VIEWER
    assert "/members/" not in viewer.get("/documents/").content.decode()


def test_a_new_workspace_is_owned_and_current(alice: User) -> None:
    client = signed_in(alice)

    assert client.post("/workspaces/new/", {"name": ""}).status_code == 422
    created = client.post("/workspaces/new/", {"name": "Design"})

    workspace = Workspace.objects.get(name="Design")
    assert created["Location"] == "/members/"
    assert Membership.objects.get(workspace=workspace, user=alice).role == Role.OWNER
    page = client.get("/documents/").content.decode()
    assert 'Documents <span class="context">in Design' in page


def test_missing_pages_and_other_peoples_documents_are_friendly_404s(
    alice: User, bob: User
) -> None:
    document = document_create(workspace=alice.personal_workspace, title="Private",
                               content="Mine.", author=alice)
    client = signed_in(bob)

    for path in ("/no/such/page/", f"/documents/{document.pk}/", "/documents/999999/edit/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "We couldn&#x27;t find that page" in response.content.decode()
        assert "Private" not in response.content.decode()


def test_a_server_error_page_needs_no_database(alice: User) -> None:
    response = server_error(RequestFactory().get("/documents/"))

    assert response.status_code == 500
    assert "Something went wrong on our side" in response.content.decode()


def test_provider_outages_and_rate_limits_get_their_own_pages(
    alice: User, use_models: Callable[..., None]
) -> None:
    use_models(embedding="scripted:hash")
    indexed(alice.personal_workspace, alice, "Deploys", "Deploys happen on Tuesdays.")
    client = signed_in(alice)

    scripted.script("hash", *[Unavailable(provider="scripted", status_code=503)] * 3)
    outage = client.get("/search/", {"q": "when do deploys happen", "mode": "vector"})
    assert outage.status_code == 503
    assert "A service we need is unavailable" in outage.content.decode()

    scripted.script("hash", RateLimited(provider="scripted", retry_after=90))
    limited = client.get("/search/", {"q": "who reviews rollbacks", "mode": "vector"})
    assert limited.status_code == 429
    assert limited["Retry-After"] == "90"
    assert "Please wait a moment" in limited.content.decode()
    assert "Try again in about 90 seconds." in limited.content.decode()


def test_search_highlights_matches_and_links_to_the_passage(
    alice: User, use_models: Callable[..., None]
) -> None:
    use_models(embedding="scripted:hash")
    document = indexed(alice.personal_workspace, alice, "Deploys",
                       "Deploys happen on Tuesdays. Rollbacks need a second reviewer.")
    chunk = document.chunks.get()
    client = signed_in(alice)

    page = client.get("/search/", {"q": "rollbacks reviewer", "mode": "text"}).content.decode()

    assert f'href="/documents/{document.pk}/#chunk-{chunk.pk}"' in page
    assert "<mark>Rollbacks</mark>" in page
    assert re.search(r'<input type="radio" name="mode" value="text"[^>]* checked>', page)
    passage = signed_in(alice).get(f"/documents/{document.pk}/").content.decode()
    assert f'id="chunk-{chunk.pk}"' in passage


def test_an_upload_through_the_form_becomes_a_document(alice: User) -> None:
    client = signed_in(alice)

    refused = client.post("/documents/upload/", {
        "file": SimpleUploadedFile("tool.exe", b"MZ\x90\x00binary", "application/octet-stream")})
    assert refused.status_code == 422
    assert "errorlist" in refused.content.decode()

    uploaded = client.post("/documents/upload/", {
        "file": SimpleUploadedFile("notes.md", b"# Notes\n\nStandup at ten.", "text/markdown"),
    }, headers={"HX-Request": "true"})
    document = Document.objects.get()
    assert uploaded["HX-Redirect"] == f"/documents/{document.pk}/"
    assert document.source_name == "notes.md"


def test_the_per_user_rate_limit_covers_the_web_pages_too(
    alice: User, settings: Any, scripted_chat: Callable[..., None]
) -> None:
    settings.AI_RATE_LIMIT = "2/minute"
    client = signed_in(alice)

    assert client.get("/search/", {"q": "deploys"}).status_code == 200
    assert client.post("/chat/reply/", {"message": "Hi"},
                       headers={"Accept": "text/event-stream"}).status_code == 200
    refused = client.get("/search/", {"q": "deploys"})

    assert refused.status_code == 429
    assert "Too many AI requests" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0


def test_an_oversized_upload_is_refused_before_its_body_is_read(
    alice: User, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    big = SimpleUploadedFile("big.txt", b"x" * 200_000, "text/plain")

    response = signed_in(alice).post("/documents/upload/", {"file": big})

    assert response.status_code == 413
    assert not Document.objects.exists()
