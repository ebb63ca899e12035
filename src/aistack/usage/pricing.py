"""Cost of a call in USD, from the maintained price table of the ``genai-prices`` package."""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cache

import genai_prices

from aistack.usage.types import Usage

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


_PER_MILLION = 1_000_000


@cache
def _unit_prices(provider: str, model: str) -> tuple[Decimal, Decimal]:
    per_million_in = cost_usd(provider=provider, model=model,
                              usage=Usage(input_tokens=_PER_MILLION))
    per_million_out = cost_usd(provider=provider, model=model,
                               usage=Usage(output_tokens=_PER_MILLION))
    return per_million_in / _PER_MILLION, per_million_out / _PER_MILLION


def cost_estimate_usd(*, provider: str, model: str, input_tokens: int,
                      output_tokens: int) -> Decimal:
    """Return about what a call of this size costs, fast: from prices per token, kept."""
    # The price table takes a third of a millisecond per lookup: too slow to ask before
    # every call, and a budget estimate needs no tiered pricing.
    price_in, price_out = _unit_prices(provider, model)
    return price_in * input_tokens + price_out * output_tokens
