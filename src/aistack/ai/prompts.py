"""Prompt templates whose version is derived from their own text.

Cache keys and usage rows carry ``template.version``, so editing a prompt changes
its version (and invalidates what was cached under the old one) without anyone
remembering to bump a constant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from string import Template

from aistack.ai.types import Message


@dataclass(frozen=True, kw_only=True)
class PromptTemplate:
    """A system prompt and an optional user prompt with ``$placeholders``."""

    name: str
    system: str
    user: str = ""
    version: str = field(init=False)

    def __post_init__(self) -> None:
        text = "\0".join((self.name, self.system, self.user))
        object.__setattr__(self, "version", hashlib.sha256(text.encode()).hexdigest()[:12])

    def render(self, **values: str) -> tuple[Message, ...]:
        """Return the messages with ``values`` substituted; a missing value raises KeyError."""
        messages = [Message(role="system", content=Template(self.system).substitute(values))]
        if self.user:
            messages.append(Message(role="user", content=Template(self.user).substitute(values)))
        return tuple(messages)
