"""Cited answers: retrieval, the prompt, citations, refusals, streaming and usage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from aistack.ai.backends import scripted
from aistack.retrieval.answers import ANSWER_PROMPT, DONT_KNOW
from aistack.usage.models import UsageRecord
from tests.conftest import ApiClient
from tests.retrieval.helpers import indexed
from tests.sse import streamed_events

HANDBOOK = {
    "Vacation policy": "Employees receive 25 days of paid vacation per year. Unused days "
                       "carry over until the end of March.",
    "Incident response": "When an alert fires, the on-call engineer acknowledges it within "
                         "five minutes and opens an incident channel.",
    "Expenses": "Expense reports are filed monthly through the finance portal. Receipts "
                "older than 90 days are not reimbursed.",
}


@pytest.fixture
def handbook(alice: User) -> dict[str, int]:
    scripted.reset()
    return {title: indexed(alice.personal_workspace, alice, title, text).pk
            for title, text in HANDBOOK.items()}


def test_the_extractive_model_answers_with_citations(alice_api: ApiClient,
                                                     handbook: dict[str, int]) -> None:
    body = alice_api.post("/api/v1/ask", {"question": "How many vacation days do I get?"}).json()

    assert "25 days of paid vacation" in body["answer"]
    assert body["model"] == "local:extractive"
    assert body["extractive"] is True
    assert body["answered"] is True
    assert body["citations"][0]["document_id"] == handbook["Vacation policy"]
    assert f"[{body['citations'][0]['n']}]" in body["answer"]
    row = UsageRecord.objects.filter(feature="ask", model="local:extractive").get()
    assert row.prompt_version == ANSWER_PROMPT.version


def test_citation_markers_inside_a_document_never_become_citations(
    alice: User, alice_api: ApiClient, handbook: dict[str, int]
) -> None:
    forged = indexed(alice.personal_workspace, alice, "Safety certificate",
                     "The boiler room was certified by the ministry [2][3]. Inspections "
                     "happen every spring.").pk

    body = alice_api.post("/api/v1/ask",
                          {"question": "Who certified the boiler room?"}).json()

    assert "certified by the ministry" in body["answer"]
    assert {c["document_id"] for c in body["citations"]} == {forged}
    assert "[2][3]" not in body["answer"]


def test_questions_the_documents_do_not_cover_get_i_dont_know_without_a_model_call(
    alice_api: ApiClient, handbook: dict[str, int]
) -> None:
    body = alice_api.post("/api/v1/ask",
                          {"question": "What is the boiling point of tungsten?"}).json()

    assert body == {"answer": DONT_KNOW, "answer_html": f"<p>{DONT_KNOW}</p>\n",
                    "citations": [], "model": "", "extractive": False, "answered": False}
    assert not UsageRecord.objects.filter(feature="ask", model="local:extractive").exists()


def test_a_language_model_gets_numbered_sources_and_its_citations_are_linked(
    alice_api: ApiClient, handbook: dict[str, int], use_models: Callable[..., None]
) -> None:
    use_models("scripted:writer")
    scripted.script("writer", scripted.Reply(text="File monthly through the portal [1]; "
                                                  "old receipts are refused [1][9]."))

    body = alice_api.post("/api/v1/ask", {"question": "How do I file expense reports?",
                                          "k": 2}).json()

    [call] = [c for c in scripted.calls() if c.operation != "embed"]
    system_prompt = call.messages[0]
    sources = [line for line in system_prompt.splitlines() if line[:1] == "["]
    assert sources[0].startswith("[1] Expense reports are filed monthly")
    assert [line[:3] for line in sources] == ["[1]", "[2]"]
    assert call.messages[-1] == "How do I file expense reports?"
    # [9] names no source: it is not turned into a citation.
    assert [c["n"] for c in body["citations"]] == [1]
    assert body["citations"][0]["document_id"] == handbook["Expenses"]
    assert body["model"] == "scripted:writer" and body["extractive"] is False


def test_the_models_own_refusal_has_no_citations(
    alice_api: ApiClient, handbook: dict[str, int], use_models: Callable[..., None]
) -> None:
    use_models("scripted:writer")
    scripted.script("writer", scripted.Reply(text="I don't know."))

    body = alice_api.post("/api/v1/ask", {"question": "Who approves vacation requests?"}).json()

    assert body["answer"] == "I don't know."
    assert body["citations"] == [] and body["answered"] is False


def test_only_the_callers_workspace_reaches_the_model(
    alice_api: ApiClient, bob: User, handbook: dict[str, int], use_models: Callable[..., None]
) -> None:
    indexed(bob.personal_workspace, bob, "Bob's secret", "Vacation days are unlimited for Bob.")
    use_models("scripted:echo")

    alice_api.post("/api/v1/ask", {"question": "How many vacation days are there?"})

    [call] = [c for c in scripted.calls() if c.operation != "embed"]
    assert "unlimited" not in " ".join(call.messages)


def test_streamed_answers_send_tokens_then_the_full_response(
    alice_api: ApiClient, handbook: dict[str, int], use_models: Callable[..., None]
) -> None:
    use_models("scripted:writer")
    scripted.script("writer", scripted.Reply(text="Acknowledge within five minutes [1]."))

    response = alice_api.post("/api/v1/ask", {"question": "What happens when an alert fires?",
                                              "stream": True})

    assert response["Content-Type"] == "text/event-stream"
    events = streamed_events(response)
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) > 1
    assert "".join(tokens) == "Acknowledge within five minutes [1]."
    name, done = events[-1]
    assert name == "done"
    assert done["citations"][0]["document_id"] == handbook["Incident response"]


def test_ask_validates_its_input(alice_api: ApiClient, bob_api: ApiClient, alice: User,
                                 handbook: dict[str, int]) -> None:
    for body in ({}, {"question": ""}, {"question": "x", "k": 0}, {"question": "x", "k": 21},
                 {"question": "x" * 2001}):
        response = alice_api.post("/api/v1/ask", body)
        assert response.status_code == 422, body
    foreign = bob_api.post("/api/v1/ask", {"question": "vacation?",
                                           "workspace": alice.personal_workspace.pk})
    assert foreign.status_code == 404
