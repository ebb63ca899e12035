"""The usage ledger: costs from the price table, rows, indexes and the admin."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from aistack.accounts.services import user_create
from aistack.usage.models import Outcome, UsageRecord
from aistack.usage.pricing import cost_usd
from aistack.usage.services import usage_record
from aistack.usage.types import Attribution, Usage

pytestmark = pytest.mark.django_db


def test_hosted_models_are_priced_from_the_table() -> None:
    # gpt-4.1-mini: $0.40 per million input, $0.10 cached, $1.60 output.
    usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=200)

    assert cost_usd(provider="openai", model="gpt-4.1-mini", usage=usage) == Decimal("0.00114")
    assert cost_usd(provider="anthropic", model="claude-haiku-4-5",
                    usage=Usage(input_tokens=1000, output_tokens=500)) > 0


@pytest.mark.parametrize(("provider", "model"), [
    ("local", "extractive"), ("scripted", "echo"), ("ollama", "llama3.2"),
    ("openai", "some-model-served-by-vllm"),
])
def test_free_and_unknown_models_cost_nothing(provider: str, model: str) -> None:
    usage = Usage(input_tokens=1000, output_tokens=500)

    assert cost_usd(provider=provider, model=model, usage=usage) == 0


def test_a_row_holds_everything_reports_need(alice: User) -> None:
    attribution = Attribution(feature="summary", user_id=alice.pk, object_id=42,
                              prompt_version="v1")

    row = usage_record(
        attribution=attribution, provider="openai", model="gpt-4.1-mini",
        usage=Usage(input_tokens=1000, output_tokens=500), latency_ms=812,
        outcome=Outcome.OK, time_to_first_token_ms=120, request_id="req_1",
    )

    # As save() returns it: with what the database filled in, saved again as it is.
    written_by = row.created_xact
    assert isinstance(written_by, int)
    row.latency_ms = 813
    row.save()
    row.refresh_from_db()
    assert row.created_xact == written_by
    assert (row.feature, row.user_id, row.object_id, row.model) == (
        "summary", alice.pk, 42, "openai:gpt-4.1-mini")
    assert row.cost_usd == Decimal("0.00120000")
    assert (row.latency_ms, row.time_to_first_token_ms, row.request_id) == (813, 120, "req_1")
    assert row.created_at is not None


def test_cache_hits_are_rows_that_cost_nothing() -> None:
    row = usage_record(attribution=Attribution(feature="summary"), provider="openai",
                       model="gpt-4.1-mini", usage=Usage(), latency_ms=1, outcome=Outcome.OK,
                       cache_hit=True)

    assert (row.cache_hit, row.cost_usd) == (True, 0)


def test_reports_by_time_feature_and_workspace_are_indexed() -> None:
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, UsageRecord._meta.db_table)

    indexed = {tuple(i["columns"]) for i in indexes.values() if i["index"]}
    assert {("created_at", "latency_ms", "id"), ("feature", "created_at"),
            ("workspace_id", "created_at"), ("user_id", "created_at")} <= indexed


def test_the_admin_lists_the_ledger_read_only() -> None:
    assert admin.site.is_registered(UsageRecord)
    staff = user_create(username="root", password="correct horse battery staple", is_staff=True)
    staff.is_superuser = True
    staff.save()
    usage_record(attribution=Attribution(feature="chat"), provider="scripted", model="echo",
                 usage=Usage(input_tokens=1), latency_ms=3, outcome=Outcome.OK)
    client = Client()
    client.force_login(staff)

    listing = client.get("/admin/usage/usagerecord/")
    detail = client.get(f"/admin/usage/usagerecord/{UsageRecord.objects.get().pk}/change/")

    assert listing.status_code == 200
    assert b"scripted:echo" in listing.content
    assert detail.status_code == 200
    assert b'name="feature"' not in detail.content
