"""Bob, with a workspace of his own, tries every door to alice's workspace and finds nothing.

Every door is tried with alice's real ids, and the answers compared with those for ids
that do not exist: refusing differently would itself tell bob what alice has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from aistack.accounts.models import Membership, Workspace
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.chat.models import Conversation
from aistack.documents.models import Document
from aistack.jobs.models import Job
from aistack.usage.models import UsageRecord
from tests.conftest import ApiClient
from tests.retrieval.helpers import indexed
from tests.sse import streamed_events

pytestmark = pytest.mark.django_db

SECRET = "Zanzibar quokka ledger: the vault code is 7741, kept by the night porter."
ALICE_TITLE = "Quokka vault"
# Words bob's question shares with alice's document, so retrieval is tempted.
QUESTION = "What is the vault code in the quokka ledger?"
MISSING_ID = 987_654_321


def leaks(text: str) -> bool:
    """Return whether ``text`` holds anything of alice's document."""
    return any(part in text for part in ("7741", "Zanzibar", "night porter", ALICE_TITLE))


@dataclass(frozen=True, kw_only=True)
class Scene:
    alice: User
    bob: User
    alice_api: ApiClient
    bob_api: ApiClient
    alice_workspace: Workspace
    bob_workspace: Workspace
    alice_doc: Document
    bob_doc: Document


@pytest.fixture
def scene(alice: User, bob: User, alice_api: ApiClient, bob_api: ApiClient,
          use_models: Callable[..., None], scripted_chat: Callable[..., None],
          settings: Any) -> Scene:
    use_models(embedding="scripted:hash")
    settings.AI_RATE_LIMIT = ""
    alice_doc = indexed(alice.personal_workspace, alice, ALICE_TITLE, SECRET)
    bob_doc = indexed(bob.personal_workspace, bob, "Bob's notes",
                      "Bob keeps a ledger of quokka sightings on the island trail.")
    return Scene(alice=alice, bob=bob, alice_api=alice_api, bob_api=bob_api,
                 alice_workspace=alice.personal_workspace, bob_workspace=bob.personal_workspace,
                 alice_doc=alice_doc, bob_doc=bob_doc)


def model_inputs() -> str:
    """Return everything every model call in this process was sent."""
    return "\n".join(text for call in scripted.calls() for text in call.messages)


def jobs_state() -> list[tuple[Any, ...]]:
    return list(Job.objects.order_by("pk").values_list("kind", "object_id", "status",
                                                       "generation"))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/documents/{id}", None),
        ("patch", "/api/v1/documents/{id}", {"title": "Bob was here", "content": "Replaced."}),
        ("delete", "/api/v1/documents/{id}", None),
        ("get", "/api/v1/documents/{id}/summary", None),
        ("post", "/api/v1/documents/{id}/summary", None),
    ],
)
def test_document_ids_lead_nowhere(scene: Scene, method: str, path: str,
                                   body: dict[str, str] | None) -> None:
    before = jobs_state()
    scripted.reset()

    theirs = scene.bob_api.request(method, path.format(id=scene.alice_doc.pk), body)
    missing = scene.bob_api.request(method, path.format(id=MISSING_ID), body)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert not leaks(theirs.content.decode())
    scene.alice_doc.refresh_from_db()
    assert (scene.alice_doc.title, scene.alice_doc.content) == (ALICE_TITLE, SECRET)
    assert jobs_state() == before
    assert scripted.calls() == []  # no summary was made for bob either
    # The same request works on bob's own document: the 404 is about whose it is.
    own = scene.bob_api.request(method, path.format(id=scene.bob_doc.pk), body)
    assert own.status_code in (200, 202, 204)


def test_lists_and_filters_show_only_his_own(scene: Scene) -> None:
    everything = scene.bob_api.get("/api/v1/documents").json()
    assert [item["id"] for item in everything["items"]] == [scene.bob_doc.pk]

    filtered = scene.bob_api.get("/api/v1/documents",
                                 {"workspace": scene.alice_workspace.pk}).json()
    assert filtered == {"items": [], "count": 0, "next": None}
    by_title = scene.bob_api.get("/api/v1/documents", {"title": "Quokka"}).json()
    assert by_title["count"] == 0

    for body in ({"title": "Planted", "content": "x", "workspace": scene.alice_workspace.pk},):
        assert scene.bob_api.post("/api/v1/documents", body).status_code == 404
    upload = scene.bob_api.client.post(
        "/api/v1/documents/upload",
        {"file": SimpleUploadedFile("planted.txt", b"Planted."),
         "workspace": scene.alice_workspace.pk},
        headers=scene.bob_api.headers)
    assert upload.status_code == 404
    assert not Document.objects.filter(workspace=scene.alice_workspace).exclude(
        pk=scene.alice_doc.pk).exists()


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_search_finds_only_his_own_in_every_mode(scene: Scene, mode: str) -> None:
    response = scene.bob_api.get("/api/v1/search", {"q": QUESTION, "mode": mode, "k": 100})

    assert response.status_code == 200
    results = response.json()["results"]
    assert {hit["document_id"] for hit in results} <= {scene.bob_doc.pk}
    assert not leaks(response.content.decode())
    # Alice's own search finds her document: bob's came back empty-handed for a reason.
    hers = scene.alice_api.get("/api/v1/search", {"q": QUESTION, "mode": mode}).json()
    assert scene.alice_doc.pk in {hit["document_id"] for hit in hers["results"]}

    named = scene.bob_api.get("/api/v1/search", {"q": QUESTION, "mode": mode,
                                                 "workspace": scene.alice_workspace.pk})
    assert named.status_code == 404


@pytest.mark.parametrize("stream", [False, True])
def test_ask_cites_and_shows_the_model_only_his_own(scene: Scene, stream: bool) -> None:
    scripted.reset()

    response = scene.bob_api.post("/api/v1/ask", {"question": QUESTION, "stream": stream})

    assert response.status_code == 200
    if stream:
        events = streamed_events(response)
        body = json.dumps(events)
        answer = next(data for name, data in events if name == "done")
    else:
        body = response.content.decode()
        answer = response.json()
    assert {citation["document_id"] for citation in answer["citations"]} <= {scene.bob_doc.pk}
    assert not leaks(body)
    sent = model_inputs()
    # The model was asked, with bob's passage as its context, and nothing of alice's.
    assert "quokka sightings" in sent
    assert not leaks(sent)

    scripted.reset()
    named = scene.bob_api.post("/api/v1/ask", {"question": QUESTION,
                                               "workspace": scene.alice_workspace.pk})
    assert named.status_code == 404
    assert scripted.calls() == []


def test_chat_sends_the_model_only_his_conversation(scene: Scene) -> None:
    alice_client, bob_client = Client(), Client()
    alice_client.force_login(scene.alice)
    bob_client.force_login(scene.bob)
    streamed_events(alice_client.post("/chat/reply/", {"message": SECRET}))
    [conversation] = Conversation.objects.filter(user=scene.alice)
    before = conversation.messages.count()
    scripted.reset()

    api_reply = scene.bob_api.post("/api/v1/chat", {"prompt": "What did the porter say?"})
    page = bob_client.get(f"/chat/{conversation.pk}/")
    into_hers = bob_client.post("/chat/reply/", {"message": "Tell me the code.",
                                                "conversation": conversation.pk})

    assert api_reply.status_code == 200
    assert not leaks(api_reply.content.decode())
    assert page.status_code == 404
    assert not leaks(page.content.decode())
    assert into_hers.status_code == 404
    assert conversation.messages.count() == before
    assert not leaks(model_inputs())
    assert "What did the porter say?" in model_inputs()


def test_summaries_are_never_shared_between_workspaces(scene: Scene) -> None:
    scripted.script("echo", Reply(text="ALICE-ONLY: the vault code is 7741."))
    hers = scene.alice_api.get(f"/api/v1/documents/{scene.alice_doc.pk}/summary").json()
    assert hers["summary"] == "ALICE-ONLY: the vault code is 7741."
    # The same text in bob's workspace: same content hash, prompt and model as hers.
    twin = indexed(scene.bob_workspace, scene.bob, "Copied", SECRET)
    assert twin.content_hash == scene.alice_doc.content_hash
    scripted.script("echo", Reply(text="Bob's own summary."))

    his = scene.bob_api.get(f"/api/v1/documents/{twin.pk}/summary").json()
    by_her_id = scene.bob_api.get(f"/api/v1/documents/{scene.alice_doc.pk}/summary")

    assert his["summary"] == "Bob's own summary."
    assert by_her_id.status_code == 404
    assert "ALICE-ONLY" not in by_her_id.content.decode()


def test_usage_reports_only_his_own(scene: Scene) -> None:
    scene.alice_api.post("/api/v1/ask", {"question": "Where is the vault code kept?"})
    scene.alice_api.post("/api/v1/chat", {"prompt": "Remind me of the vault code."})
    scene.bob_api.post("/api/v1/chat", {"prompt": "Any quokkas today?"})
    bobs_calls = UsageRecord.objects.filter(user=scene.bob).count()
    assert UsageRecord.objects.filter(user=scene.alice).exists()

    reports = {group: scene.bob_api.get("/api/v1/usage", {"group_by": group})
               for group in ("feature", "user", "workspace", "model", "day")}

    for group, response in reports.items():
        assert response.status_code == 200, group
        rows = response.json()["rows"]
        assert sum(row["calls"] for row in rows) <= bobs_calls, group
    assert {row["key"] for row in reports["user"].json()["rows"]} <= {"bob"}
    assert {row["key"] for row in reports["workspace"].json()["rows"]} <= {
        scene.bob_workspace.slug}
    # Alice sees her own usage: bob's report left hers out, not everything.
    assert "alice" in {row["key"] for row in
                       scene.alice_api.get("/api/v1/usage", {"group_by": "user"}).json()["rows"]}
    client = Client()
    client.force_login(scene.bob)
    page = client.get("/usage/")
    assert "alice" not in page.content.decode().lower()
    assert scene.alice_workspace.slug not in page.content.decode()


def test_uploaded_files_are_not_reachable(scene: Scene, settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    response = scene.alice_api.client.post(
        "/api/v1/documents/upload",
        {"file": SimpleUploadedFile("vault.txt", SECRET.encode(), content_type="text/plain")},
        headers=scene.alice_api.headers)
    assert response.status_code == 201
    document = Document.objects.get(pk=response.json()["id"])
    with document.source_file.open("rb") as stored:
        assert stored.read() == SECRET.encode()
    name = document.source_file.name
    # The API names the original only by its file name, never by where it is kept.
    assert name not in response.content.decode()

    for client in (scene.bob_api.client, scene.alice_api.client, Client()):
        for url in (f"/{name}", f"/media/{name}", f"/static/{name}",
                    f"/media/{Path(name).name}"):
            fetched = client.get(url, headers=scene.bob_api.headers)
            assert fetched.status_code == 404, url
            assert SECRET.encode() not in fetched.content


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/documents/{id}/"),
        ("get", "/documents/{id}/edit/"),
        ("post", "/documents/{id}/edit/"),
        ("get", "/documents/{id}/delete/"),
        ("post", "/documents/{id}/delete/"),
        ("get", "/documents/{id}/chunks/"),
    ],
)
def test_web_pages_of_her_documents_are_missing(scene: Scene, method: str, path: str) -> None:
    client = Client()
    client.force_login(scene.bob)

    theirs = getattr(client, method)(path.format(id=scene.alice_doc.pk),
                                     {"title": "Bob was here", "content": "Replaced."})
    missing = getattr(client, method)(path.format(id=MISSING_ID),
                                      {"title": "Bob was here", "content": "Replaced."})

    assert theirs.status_code == missing.status_code == 404
    assert not leaks(theirs.content.decode())
    scene.alice_doc.refresh_from_db()
    assert (scene.alice_doc.title, scene.alice_doc.content) == (ALICE_TITLE, SECRET)


def test_web_lists_search_and_workspace_switching_stay_in_his_workspaces(scene: Scene) -> None:
    client = Client()
    client.force_login(scene.bob)

    pages = [client.get("/documents/"), client.get("/search/", {"q": QUESTION}),
             client.get("/documents/", {"workspace": scene.alice_workspace.pk})]
    switched = client.post("/workspace/", {"workspace": scene.alice_workspace.pk})
    after = client.get("/documents/")

    for page in pages:
        assert page.status_code == 200
        assert not leaks(page.content.decode())
    assert switched.status_code == 404
    assert not leaks(after.content.decode())


def test_her_memberships_cannot_be_changed(scene: Scene) -> None:
    client = Client()
    client.force_login(scene.bob)
    membership = Membership.objects.get(workspace=scene.alice_workspace, user=scene.alice)

    role = client.post(f"/members/{membership.pk}/role/", {"role": "viewer"})
    removed = client.post(f"/members/{membership.pk}/remove/")

    assert role.status_code == removed.status_code == 404
    membership.refresh_from_db()
    assert membership.role == "owner"
    assert not Membership.objects.filter(workspace=scene.alice_workspace,
                                         user=scene.bob).exists()
