"""Writes to the usage ledger."""

from __future__ import annotations

from aistack.ai.types import Attribution, Usage
from aistack.usage.models import Outcome, UsageRecord
from aistack.usage.pricing import cost_usd


def usage_record(
    *,
    attribution: Attribution,
    provider: str,
    model: str,
    usage: Usage,
    latency_ms: int,
    outcome: Outcome,
    attempts: int = 1,
    time_to_first_token_ms: int | None = None,
    error_class: str = "",
    request_id: str | None = None,
    cache_hit: bool = False,
) -> UsageRecord:
    """Write one ledger row; ``model`` is the name without the provider prefix."""
    return UsageRecord.objects.create(
        feature=attribution.feature,
        user_id=attribution.user_id,
        workspace_id=attribution.workspace_id,
        object_id=attribution.object_id,
        prompt_version=attribution.prompt_version,
        provider=provider,
        model=f"{provider}:{model}",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd=cost_usd(provider=provider, model=model, usage=usage),
        latency_ms=latency_ms,
        time_to_first_token_ms=time_to_first_token_ms,
        attempts=attempts,
        outcome=outcome,
        error_class=error_class,
        request_id=request_id or "",
        cache_hit=cache_hit,
    )
