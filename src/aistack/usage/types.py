"""What the usage ledger records of a model call: who it was for and what it used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Who and what a model call is for: the usage ledger's row keys."""

    feature: str
    user_id: int | None = None
    workspace_id: int | None = None
    # A call that reads several workspaces' data (an ask over all of a user's workspaces)
    # names them here instead: each is charged an equal share. Given one, it becomes
    # ``workspace_id``.
    workspace_ids: tuple[int, ...] = ()
    object_id: int | None = None
    prompt_version: str = ""

    def __post_init__(self) -> None:
        ids = sorted({*self.workspace_ids, *(() if self.workspace_id is None
                                             else (self.workspace_id,))})
        object.__setattr__(self, "workspace_id", ids[0] if len(ids) == 1 else None)
        object.__setattr__(self, "workspace_ids", tuple(ids) if len(ids) > 1 else ())

    @property
    def charged_workspace_ids(self) -> tuple[int, ...]:
        """Return every workspace the call is charged to: one, several, or none."""
        return (self.workspace_id,) if self.workspace_id is not None else self.workspace_ids


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
