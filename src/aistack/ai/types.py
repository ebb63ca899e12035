"""Values that cross the boundary between the application and its models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aistack.usage.types import Usage

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, kw_only=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """What to ask a chat model."""

    messages: tuple[Message, ...]
    # Source passages the answer must draw on, cited as [1], [2]… in their order here.
    # Language models read them through the rendered prompt; extractive models select
    # sentences from them directly.
    context: tuple[str, ...] = ()
    # What is wanted from the context. Language models read it in the prompt; extractive
    # models cannot read instructions, so they follow this instead.
    task: Literal["answer", "summarize"] = "answer"
    # What the context was retrieved for, when the last message alone does not say it (a
    # follow-up: "and how do I prepare for it?"). Extractive models answer this instead.
    question: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None

    def last_user_text(self) -> str:
        """Return the text of the last user message, or an empty string."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, kw_only=True)
class ChatResult:
    """A chat model's complete answer."""

    text: str
    model: str
    usage: Usage
    request_id: str | None = None
    # True when the text is quoted from the supplied context rather than written by a
    # language model; wherever the answer is shown it must say so.
    extractive: bool = False


@dataclass(frozen=True, kw_only=True)
class StreamChunk:
    """A piece of a streamed answer; the last one may carry only usage."""

    text: str = ""
    usage: Usage | None = None
    request_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class EmbeddingResult:
    """One vector per input text, in input order."""

    vectors: list[list[float]]
    model: str
    usage: Usage
    request_id: str | None = None
