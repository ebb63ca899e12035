"""Conversations: each turn kept per user, replies streamed and saved once complete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from aistack.accounts.services import api_token_create
from aistack.ai.backends import scripted
from aistack.ai.backends.scripted import Reply
from aistack.chat.models import Author, ChatMessage, Conversation
from aistack.chat.services import CHAT_PROMPT, conversation_reply_stream, conversation_start
from aistack.errors import Invalid
from aistack.usage.models import UsageRecord
from tests.conftest import ApiClient
from tests.sse import streamed_events

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def reply(client: Client, message: str, conversation: int | None = None) -> list[tuple[str, Any]]:
    data = {"message": message, "conversation": conversation or ""}
    response = client.post("/chat/reply/", data, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    return streamed_events(response)


def test_a_first_message_starts_a_conversation_and_the_reply_is_kept(
    alice: User, scripted_chat: Callable[..., None]
) -> None:
    scripted.script("echo", Reply(text="Hello! What shall we look at?"))

    events = reply(signed_in(alice), "  Hello   there  ")

    conversation = Conversation.objects.get(user=alice)
    assert conversation.title == "Hello there"
    assert [name for name, _ in events] == ["token"] * 6 + ["done"]
    assert "".join(data["text"] for name, data in events if name == "token") == \
        "Hello! What shall we look at?"
    message = conversation.messages.get(role=Author.ASSISTANT)
    assert events[-1][1] == {"answer": "Hello! What shall we look at?",
                             "html": "<p>Hello! What shall we look at?</p>\n",
                             "anchor": f"turn-{message.pk}-source-", "citations": [],
                             "model": "scripted:echo", "extractive": False,
                             "conversation": conversation.pk, "url": f"/chat/{conversation.pk}/"}
    turns = list(conversation.messages.values_list("role", "content", "model"))
    assert turns == [(Author.USER, "Hello   there", ""),
                     (Author.ASSISTANT, "Hello! What shall we look at?", "scripted:echo")]
    row = UsageRecord.objects.get()
    assert (row.feature, row.user_id, row.workspace_id) == ("chat", alice.pk,
                                                           alice.personal_workspace.pk)


def test_the_next_turn_sends_the_whole_conversation(
    alice: User, scripted_chat: Callable[..., None]
) -> None:
    client = signed_in(alice)
    scripted.script("echo", Reply(text="Tuesdays."), Reply(text="A second reviewer."))
    reply(client, "When do we deploy?")
    conversation = Conversation.objects.get()

    reply(client, "And rollbacks?", conversation.pk)

    assert scripted.calls()[-1].messages == (CHAT_PROMPT.system, "When do we deploy?",
                                             "Tuesdays.", "And rollbacks?")
    assert conversation.messages.count() == 4
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert page.index("When do we deploy?") < page.index("Tuesdays.") < page.index(
        "And rollbacks?") < page.index("A second reviewer.")


def test_the_oldest_turns_give_way_when_a_conversation_outgrows_the_model(
    alice: User, scripted_chat: Callable[..., None], settings: Any
) -> None:
    settings.AI_CHAT_MAX_INPUT_CHARS = 100
    conversation = conversation_start(user=alice, first_message="x" * 60)
    for text in ("x" * 60, "y" * 30):
        ChatMessage.objects.create(conversation=conversation, role=Author.USER, content=text)

    reply = conversation_reply_stream(conversation=conversation, text="z" * 40, user=alice,
                                      workspace=alice.personal_workspace, uses_documents=False)
    "".join(reply.stream)

    assert scripted.calls()[-1].messages == (CHAT_PROMPT.system, "y" * 30, "z" * 40)


def test_a_message_must_say_something(alice: User, scripted_chat: Callable[..., None]) -> None:
    with pytest.raises(Invalid, match="Write a message first"):
        conversation_start(user=alice, first_message="   ")

    response = signed_in(alice).post("/chat/reply/", {"message": ""},
                                     headers={"Accept": "text/event-stream"})

    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Write a message first."
    assert not Conversation.objects.exists()


def test_conversations_are_private(alice: User, bob: User,
                                   scripted_chat: Callable[..., None]) -> None:
    reply(signed_in(alice), "My secret plan")
    conversation = Conversation.objects.get()
    client = signed_in(bob)

    assert client.get(f"/chat/{conversation.pk}/").status_code == 404
    assert "My secret plan" not in client.get("/chat/").content.decode()
    refused = client.post("/chat/reply/", {"message": "Mine now", "conversation": conversation.pk},
                          headers={"Accept": "text/event-stream"})
    assert refused.status_code == 404
    assert conversation.messages.count() == 2
    assert Client().get("/chat/").status_code == 302


def test_a_provider_outage_ends_the_stream_with_an_error_and_keeps_no_reply(
    alice: User, use_models: Callable[..., None]
) -> None:
    use_models("scripted:unavailable")

    events = reply(signed_in(alice), "Anyone there?")

    assert events == [("error", {"error": {
        "code": "ai_unavailable",
        "message": "The AI model is unavailable right now; try again shortly."}})]
    conversation = Conversation.objects.get()
    assert list(conversation.messages.values_list("role", flat=True)) == [Author.USER]


def test_the_api_renames_and_deletes_a_conversation(alice: User, alice_api: ApiClient) -> None:
    conversation = conversation_start(user=alice, first_message="Hello there")
    ChatMessage.objects.create(conversation=conversation, role=Author.USER, content="Hello")
    url = f"/api/v1/chat/conversations/{conversation.pk}"

    renamed = alice_api.patch(url, {"title": "  Release   plans "})

    assert renamed.status_code == 200
    body = renamed.json()
    assert (body["id"], body["title"]) == (conversation.pk, "Release plans")
    assert {"created_at", "updated_at"} <= body.keys()
    conversation.refresh_from_db()
    assert conversation.title == "Release plans"

    assert alice_api.delete(url).status_code == 204
    assert not Conversation.objects.exists()
    assert not ChatMessage.objects.exists()
    gone = alice_api.delete(url)
    assert gone.status_code == 404
    assert gone.json() == {"error": {"code": "not_found", "message": "Conversation not found."}}


@pytest.mark.parametrize(("title", "message"), [
    ("   ", "A title cannot be empty."),
    ("x" * 121, "A title has at most 120 characters."),
    # Bidi overrides and zero-width characters show nothing: a title of them is empty.
    ("\u200b\u200f\u202e", "A title cannot be empty."),
])
def test_a_title_must_be_something_that_fits(alice: User, alice_api: ApiClient, title: str,
                                             message: str) -> None:
    conversation = conversation_start(user=alice, first_message="Hello there")

    refused = alice_api.patch(f"/api/v1/chat/conversations/{conversation.pk}", {"title": title})

    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid"
    assert refused.json()["error"]["message"] == message
    conversation.refresh_from_db()
    assert conversation.title == "Hello there"


def test_only_the_owner_renames_or_deletes_a_conversation(
    alice: User, bob: User, bob_api: ApiClient
) -> None:
    conversation = conversation_start(user=alice, first_message="My secret plan")
    url = f"/api/v1/chat/conversations/{conversation.pk}"

    for refused in (bob_api.patch(url, {"title": "Mine now"}), bob_api.delete(url),
                    signed_in(bob).post(f"/chat/{conversation.pk}/rename/", {"title": "Mine"}),
                    signed_in(bob).post(f"/chat/{conversation.pk}/delete/")):
        assert refused.status_code == 404
    assert bob_api.patch(url, {"title": "Mine now"}).json()["error"]["code"] == "not_found"
    assert ApiClient(None).delete(url).status_code == 401
    conversation.refresh_from_db()
    assert conversation.title == "My secret plan"


def test_a_narrowed_token_cannot_change_conversations(alice: User) -> None:
    conversation = conversation_start(user=alice, first_message="Hello there")
    url = f"/api/v1/chat/conversations/{conversation.pk}"

    for scope in ({"read_only": True}, {"workspace": alice.personal_workspace}):
        api = ApiClient(api_token_create(user=alice, name="narrow", **scope)[1])  # type: ignore[arg-type]
        assert api.patch(url, {"title": "Renamed"}).status_code == 403
        refused = api.delete(url)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    assert Conversation.objects.get().title == "Hello there"


@pytest.mark.parametrize(("title", "message"), [
    ("  ", "A title cannot be empty."),
    ("\x00\u202e\u200b", "A title cannot be empty."),
])
def test_the_page_shows_a_refused_title_with_its_problem(alice: User, title: str,
                                                         message: str) -> None:
    conversation = conversation_start(user=alice, first_message="Hello there")

    page = signed_in(alice).post(f"/chat/{conversation.pk}/rename/", {"title": title})

    assert page.status_code == 422
    html = page.content.decode()
    assert message in html
    assert '<details class="rename" open>' in html
    conversation.refresh_from_db()
    assert conversation.title == "Hello there"
    assert signed_in(alice).get(f"/chat/{conversation.pk}/rename/").status_code == 405


def test_renames_and_deletes_count_against_the_write_limit(
    alice: User, alice_api: ApiClient, settings: Any, clean_redis: None,
) -> None:
    settings.WRITE_RATE_LIMIT = "2/minute"
    conversation = conversation_start(user=alice, first_message="Hello there")
    url = f"/api/v1/chat/conversations/{conversation.pk}"

    assert alice_api.patch(url, {"title": "One"}).status_code == 200
    assert alice_api.patch(url, {"title": "Two"}).status_code == 200
    refused = alice_api.delete(url)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert Conversation.objects.filter(pk=conversation.pk).exists()
