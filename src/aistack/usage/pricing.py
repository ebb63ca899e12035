"""Cost of a call in USD, from the maintained price table of the ``genai-prices`` package."""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cache

import genai_prices

from aistack.ai.types import Usage

logger = logging.getLogger(__name__)

# Models that run on our own hardware: no per-token price.
FREE_PROVIDERS = frozenset({"local", "scripted", "ollama"})


@cache
def _warn_unpriced(provider: str, model: str) -> None:
    logger.warning("no price known for %s:%s; its calls are recorded at cost 0", provider, model)


def cost_usd(*, provider: str, model: str, usage: Usage) -> Decimal:
    """Return what ``usage`` of ``provider:model`` costs, or 0 when no price is known."""
    if provider in FREE_PROVIDERS or not (usage.input_tokens or usage.output_tokens):
        return Decimal(0)
    try:
        price = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cached_tokens,
            ),
            model,
            provider_id=provider,
        )
    except LookupError:
        # OpenAI-compatible servers (vLLM, LM Studio) serve models no price table knows.
        _warn_unpriced(provider, model)
        return Decimal(0)
    return price.total_price
