"""Requests generated from the OpenAPI schema, valid and invalid: none may get a 5xx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from django.contrib.auth.models import User
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from aistack.accounts.services import api_token_create
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
