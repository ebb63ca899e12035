"""What the usage ledger records of a model call: who it was for and what it used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Who and what a model call is for: the usage ledger's row keys."""

    feature: str
    user_id: int | None = None
    workspace_id: int | None = None
    object_id: int | None = None
    prompt_version: str = ""


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Tokens a call used; ``input_tokens`` includes the ``cached_tokens`` read from cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )
