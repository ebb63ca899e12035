"""Fixtures for usage: a priced model on a loopback vendor server, ledger rows, a staff user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.accounts.services import user_create
from aistack.usage.models import Outcome, UsageRecord
from aistack.usage.services import usage_record
from aistack.usage.types import Attribution, Usage
from tests.ai.conftest import TEST_API_KEY
from tests.ai.vendors import VendorServer
from tests.conftest import model_entry

PRICED_MODEL = "openai:gpt-4.1-mini"


@pytest.fixture
def vendor() -> Iterator[VendorServer]:
    server = VendorServer()
    yield server
    server.close()


@pytest.fixture
def priced_chat(use_models: Callable[..., None], vendor: VendorServer) -> VendorServer:
    """Make a priced model (OpenAI's wire protocol, on loopback) the chat model."""
    use_models(model_entry(PRICED_MODEL, API_KEY=TEST_API_KEY, BASE_URL=f"{vendor.url}/v1"),
               embedding="scripted:hash")
    return vendor


@pytest.fixture
def staff(db: None) -> User:
    return user_create(username="root", password="correct horse battery staple",
                       is_staff=True)


def ledger_row(*, feature: str = "chat", model: str = "gpt-4.1-mini", provider: str = "openai",
               user: User | None = None, workspace_id: int | None = None,
               at: datetime | None = None, latency_ms: int = 100,
               ttft_ms: int | None = None, cost: str | None = None,
               usage: Usage | None = None, outcome: Outcome = Outcome.OK,
               **extra: Any) -> UsageRecord:
    """Write a ledger row as the choke point would, at any time."""
    row = usage_record(
        attribution=Attribution(feature=feature, user_id=user.pk if user else None,
                                workspace_id=workspace_id),
        provider=provider, model=model, usage=usage or Usage(input_tokens=100, output_tokens=20),
        latency_ms=latency_ms, outcome=outcome, time_to_first_token_ms=ttft_ms,
        cost=None if cost is None else Decimal(cost), **extra,
    )
    if at is not None:
        UsageRecord.objects.filter(pk=row.pk).update(created_at=at)
        row.refresh_from_db()
    return row
