"""Chat over a workspace's documents: every turn retrieves, cites, and keeps its sources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from aistack.accounts.models import Membership, Role
from aistack.accounts.services import membership_remove, membership_set, workspace_create
from aistack.accounts.sessions import SESSION_KEY
from aistack.ai.backends import local, scripted
from aistack.ai.types import Message
from aistack.chat.models import Author, ChatMessage, Conversation
from aistack.chat.services import CHAT_PROMPT, CHAT_SOURCES_PROMPT, chat_query
from aistack.usage.models import UsageRecord
from tests.retrieval.helpers import indexed
from tests.sse import streamed_events

pytestmark = pytest.mark.django_db

TEAM_DOCUMENTS = {
    "On-call": "Every engineer joins the on-call rotation after their first month. Before "
               "the first shift, read the incident response guide and shadow one full "
               "on-call week.",
    "Vacation policy": "Employees receive 25 days of paid vacation per year. Unused days "
                       "carry over until the end of March.",
    "Expenses": "Expense reports are filed monthly through the finance portal. Receipts "
                "older than 90 days are not reimbursed.",
}
# In another team's workspace: it answers the follow-up too, and must never be read.
SECRET = ("To prepare for the on-call rotation, contractors complete the pager training "
          "course and shadow the platform team for a week.")


@pytest.fixture
def team(alice: User, bob: User) -> dict[str, Any]:
    scripted.reset()
    workspace = workspace_create(owner=alice, name="Platform team")
    documents = {title: indexed(workspace, alice, title, text).pk
                 for title, text in TEAM_DOCUMENTS.items()}
    other = workspace_create(owner=bob, name="Contractors")
    secret = indexed(other, bob, "Contractor on-call", SECRET).pk
    return {"workspace": workspace, "documents": documents, "secret": secret}


def chat_client(user: User, workspace_id: int) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = workspace_id
    session.save()
    return client


def send(client: Client, message: str, conversation: int | None = None, *,
         documents: bool = True) -> dict[str, Any]:
    data = {"message": message, "conversation": conversation or ""}
    if documents:
        data["documents"] = "on"
    response = client.post("/chat/reply/", data, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200, response.content
    events = streamed_events(response)
    assert events[-1][0] == "done", events
    return dict(events[-1][1])


def test_a_follow_up_is_answered_offline_from_the_right_document_and_cited(
    alice: User, team: dict[str, Any]
) -> None:
    client = chat_client(alice, team["workspace"].pk)

    first = send(client, "When does an engineer join the on-call rotation?")
    follow_up = send(client, "How should I prepare for it?", first["conversation"])

    assert first["model"] == "local:extractive"
    assert "after their first month" in first["answer"]
    assert "shadow one full on-call week" in follow_up["answer"]
    assert {c["document_id"] for c in follow_up["citations"]} == {team["documents"]["On-call"]}
    assert follow_up["citations"][0]["title"] == "On-call"
    assert "pager training" not in follow_up["answer"] + str(follow_up["citations"])
    # The reply links each [n] to its source, listed with the turn.
    n = follow_up["citations"][0]["n"]
    assert f'href="#{follow_up["anchor"]}{n}"' in follow_up["html"]


def test_the_search_for_a_follow_up_carries_the_previous_question() -> None:
    earlier = [Message(role="user", content="When do engineers join the on-call rotation?"),
               Message(role="assistant", content="After their first month. [1]")]

    assert chat_query(earlier, "How should I prepare for it?") == (
        "When do engineers join the on-call rotation?\nHow should I prepare for it?")
    for follow_up in ("And vacation?", "Why?", "what about contractors", "Do they get paid?"):
        assert chat_query(earlier, follow_up).startswith("When do engineers"), follow_up
    for new_topic in ("How many vacation days do employees get per year?",
                      "Who approves travel?", "Is there a dress code?",
                      "What is this policy about?"):
        assert chat_query(earlier, new_topic) == new_topic
    assert chat_query([], "What about it?") == "What about it?"


def test_the_history_keeps_each_replys_sources(alice: User, team: dict[str, Any]) -> None:
    client = chat_client(alice, team["workspace"].pk)
    done = send(client, "How many vacation days do employees get?")

    message = ChatMessage.objects.get(role=Author.ASSISTANT)
    page = client.get(done["url"]).content.decode()

    assert message.citations == done["citations"]
    assert message.citations[0]["document_id"] == team["documents"]["Vacation policy"]
    assert "25 days of paid vacation" in message.citations[0]["snippet"]
    n = message.citations[0]["n"]
    assert f'id="turn-{message.pk}-source-{n}"' in page
    assert f'href="#turn-{message.pk}-source-{n}"' in page
    assert f'/documents/{team["documents"]["Vacation policy"]}/#chunk-' in page
    assert Conversation.objects.get().workspace == team["workspace"]


def test_a_language_model_gets_numbered_sources_and_plain_history(
    alice: User, team: dict[str, Any], use_models: Callable[..., None]
) -> None:
    use_models("scripted:writer")
    scripted.script("writer", scripted.Reply(text="After a month [1]."),
                    scripted.Reply(text="Read the guide [1]."))
    client = chat_client(alice, team["workspace"].pk)
    first = send(client, "When does an engineer join the on-call rotation?")

    send(client, "How should I prepare for it?", first["conversation"])

    system, *turns = scripted.calls()[-1].messages
    assert system.startswith(CHAT_SOURCES_PROMPT.system.split("$sources")[0])
    assert "[1] Every engineer joins the on-call rotation" in system
    assert "pager training" not in system
    # The earlier reply's [1] meant the earlier turn's sources: it is not sent on.
    assert turns == ["When does an engineer join the on-call rotation?", "After a month .",
                     "How should I prepare for it?"]


def test_with_documents_off_chat_is_plain_and_nothing_is_retrieved(
    alice: User, team: dict[str, Any], use_models: Callable[..., None]
) -> None:
    use_models("scripted:writer")
    scripted.script("writer", scripted.Reply(text="Hello!"))
    client = chat_client(alice, team["workspace"].pk)

    done = send(client, "When does an engineer join the on-call rotation?", documents=False)

    assert done["citations"] == []
    assert scripted.calls()[-1].messages[0] == CHAT_PROMPT.system
    assert set(UsageRecord.objects.filter(feature="chat").values_list("model", flat=True)) == {
        "scripted:writer"}
    assert Conversation.objects.get().uses_documents is False
    page = client.get(done["url"]).content.decode()
    assert 'name="documents" value="on">' in page  # shown unchecked


def test_the_extractive_model_says_so_when_no_document_bears_on_the_turn(
    alice: User, team: dict[str, Any]
) -> None:
    done = send(chat_client(alice, team["workspace"].pk), "Summarize: The cat sat on the mat.")

    assert done["answer"] == local.NO_CONTEXT
    assert done["citations"] == []


def test_turns_are_charged_to_the_conversations_workspace_as_chat(
    alice: User, team: dict[str, Any]
) -> None:
    send(chat_client(alice, team["workspace"].pk), "How many vacation days do employees get?")

    charged = set(UsageRecord.objects.filter(feature="chat")
                  .values_list("model", "workspace_id", "user_id"))
    assert charged == {(f"local:{local.EMBEDDING_MODEL_INT8}", team["workspace"].pk, alice.pk),
                       ("local:extractive", team["workspace"].pk, alice.pk)}


def test_a_member_removed_from_the_workspace_can_no_longer_chat_over_it(
    alice: User, bob: User, team: dict[str, Any]
) -> None:
    membership_set(workspace=team["workspace"], user=bob, role=Role.VIEWER)
    client = chat_client(bob, team["workspace"].pk)
    done = send(client, "How many vacation days do employees get?")
    assert "25 days" in done["answer"]

    membership_remove(membership=Membership.objects.get(workspace=team["workspace"], user=bob))
    for documents in ({"documents": "on"}, {}):
        # Not with documents, and not without either: the turn would spend its budget.
        refused = client.post("/chat/reply/", {"message": "And unused days?", **documents,
                                               "conversation": done["conversation"]},
                              headers={"Accept": "text/event-stream"})
        assert refused.status_code == 404
    assert ChatMessage.objects.filter(conversation_id=done["conversation"]).count() == 2
    # The history keeps the reply, but no longer shows the workspace's passages.
    page = client.get(f"/chat/{done['conversation']}/").content.decode()
    assert "25 days of paid vacation" in page
    assert 'class="citations"' not in page and "Vacation policy" not in page


def test_a_refused_turn_leaves_nothing_behind(
    alice: User, team: dict[str, Any], settings: Any
) -> None:
    client = chat_client(alice, team["workspace"].pk)
    done = send(client, "How many vacation days do employees get?")
    settings.AI_CHAT_MAX_INPUT_CHARS = 200

    refused = client.post("/chat/reply/", {"message": "x" * 250, "documents": "on",
                                           "conversation": done["conversation"]},
                          headers={"Accept": "text/event-stream"})
    odd = client.post("/chat/reply/", {"message": "hi", "conversation": "\u00b2"},
                      headers={"Accept": "text/event-stream"})

    assert refused.status_code == 422
    assert odd.status_code == 422
    assert ChatMessage.objects.count() == 2
