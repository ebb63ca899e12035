"""Requests generated from the OpenAPI schema, valid and invalid: none may get a 5xx."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from django.contrib.auth.models import User
from django.test import Client
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from aistack.accounts.services import api_token_create
from aistack.chat.services import conversation_start
from aistack.documents.services import document_create
from aistack.realtime import events
from tests.retrieval.helpers import index_now

pytestmark = pytest.mark.django_db(transaction=True)

MIN_REQUESTS = 1000
# Per operation and generation mode; with a dozen operations, comfortably over the minimum.
EXAMPLES = 42


@pytest.fixture
def fuzzing_target(settings: Any, use_models: Callable[..., None],
                   scripted_chat: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every operation answer quickly, so the budget goes to many requests."""
    use_models(embedding="scripted:hash")
    # Limits would turn most requests into 429s before they reach the code under test.
    settings.AI_RATE_LIMIT = ""
    settings.SUMMARY_READ_WAIT_SECONDS = 0.2
    # The event stream ends right after its snapshot instead of minutes later.
    monkeypatch.setattr(events, "MAX_STREAM_SECONDS", 0.0)


def cases(operation: Any, mode: GenerationMode, documents: list[int]) -> st.SearchStrategy[Any]:
    """Generate requests for the operation; half of those about a document name a real one."""
    generated = operation.as_strategy(generation_mode=mode)
    if "{document_id}" not in operation.path:
        return generated
    # Random ids are almost never a document's: only these reach past the lookup.
    existing = st.sampled_from(documents).flatmap(lambda pk: operation.as_strategy(
        generation_mode=mode, path_parameters={"document_id": pk}))
    return st.one_of(generated, existing)


def exchanges(strategy: st.SearchStrategy[Any], call: Callable[[Any], None]) -> None:
    """Send ``EXAMPLES`` generated requests; on a failure, shrink it to the simplest."""

    @given(case=strategy)
    @hypothesis_settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
    )
    def exchange(case: Any) -> None:
        call(case)

    exchange()


def test_generated_requests_never_get_a_server_error(
    asgi_url: str, alice: User, fuzzing_target: None
) -> None:
    documents = [
        index_now(document_create(workspace=alice.personal_workspace, title=f"Runbook {n}",
                                  content=f"Restart step {n}: drain, then deploy.",
                                  author=alice)).pk
        for n in range(3)
    ]
    _, token = api_token_create(user=alice)
    base_url = f"http://{asgi_url}"
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    session = requests.Session()
    # Passed with each call, so it replaces whatever credentials a case was generated with.
    auth = {"Authorization": f"Bearer {token}"}
    sent: Counter[str] = Counter()
    statuses: Counter[str] = Counter()

    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, headers=auth, timeout=30)
        label = case.operation.label
        sent[label] += 1
        statuses[f"{label} {case.meta.generation.mode.value} {response.status_code}"] += 1
        case.validate_response(response, checks=[not_a_server_error])

    # Deletions last, so that the other operations find the documents still there.
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: operation.method.upper() == "DELETE")
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exchanges(cases(operation, mode, documents), call)

    print(f"{sum(sent.values())} requests over {len(sent)} operations")
    for line, count in sorted(statuses.items()):
        print(f"{count:5d}  {line}")
    assert sum(sent.values()) >= MIN_REQUESTS
    assert len(sent) >= 10


LONE_SURROGATE = "\ud800"


def _string_fields(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, bool]:
    """Return a JSON body schema's string properties, each with whether it is required."""
    if "$ref" in spec:
        spec = schema["components"]["schemas"][spec["$ref"].rsplit("/", 1)[1]]
    required = set(spec.get("required", []))
    fields = {}
    for name, prop in spec.get("properties", {}).items():
        kinds = [prop.get("type")] + [option.get("type") for option in prop.get("anyOf", [])]
        if "string" in kinds:
            fields[name] = name in required
    return fields


def test_every_text_field_refuses_a_lone_surrogate_with_422(
    asgi_url: str, alice: User, fuzzing_target: None
) -> None:
    """JSON may carry "\\ud800" alone, which no text can: every string field of every
    request body must say so, a new field included (before, some answered 500)."""
    document = document_create(workspace=alice.personal_workspace, title="Runbook",
                               content="Restart: drain, then deploy.", author=alice)
    conversation = conversation_start(user=alice, first_message="Hello there")
    _, token = api_token_create(user=alice)
    base_url = f"http://{asgi_url}"
    schema = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10).json()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}",
                            "Content-Type": "application/json"})
    tried = Counter[str]()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            fields = _string_fields(schema, body["schema"])
            for field in fields:
                payload = {name: "fine text" for name, required in fields.items()
                           if required and name != field}
                payload[field] = f"a {LONE_SURROGATE} b"
                response = session.request(
                    method.upper(), base_url + path.format(document_id=document.pk,
                                                           conversation_id=conversation.pk),
                    data=json.dumps(payload), timeout=30)
                assert response.status_code == 422, (method, path, field, response.text)
                tried[f"{method} {path}"] += 1
    # Document create and edit, chat, ask at least.
    assert len(tried) >= 4 and sum(tried.values()) >= 6, tried


def test_control_characters_are_removed_from_stored_text(alice: User) -> None:
    _, token = api_token_create(user=alice)
    response = Client().post("/api/v1/documents",
                             data={"title": "Ru\x02nbook", "content": "Drain\x03, then\tdeploy."},
                             content_type="application/json",
                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    assert (response.json()["title"], response.json()["content"]) == (
        "Runbook", "Drain, then\tdeploy.")
