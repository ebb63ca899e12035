"""The contract every chat and embedding backend implements.

A backend only translates a request to its provider's API and reports the response
and its token usage back. Timeouts are passed in, retries, fallbacks, logging and
the usage ledger live in :mod:`aistack.ai.services`, and no backend touches a table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from aistack.ai.exceptions import InvalidRequest
from aistack.ai.types import ChatRequest, ChatResult, EmbeddingResult, StreamChunk

# A rough, deliberately generous count: the provider's own tokenizer has the last word,
# this only stops requests that are obviously too long before they cost a round trip.
CHARS_PER_TOKEN = 4


class BaseModel:
    """A configured model of one provider."""

    provider: ClassVar[str]

    def __init__(self, *, alias: str, model: str, options: Mapping[str, Any]) -> None:
        self.alias = alias
        self.model = model
        self.options = dict(options)
        # Set by a settings entry's "ID": the name of a model reached over a connection
        # other than the environment's (see ``aistack.ai.setup``).
        self.named: str | None = None

    @property
    def id(self) -> str:
        """Return the ``provider:model`` string naming this model (or its entry's ID)."""
        return self.named or f"{self.provider}:{self.model}"

    @property
    def circuit_key(self) -> str:
        """Return the name of the circuit breaker this model's failures count towards."""
        return self.provider

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        return [] if self.model else ["the model name after the colon is missing"]

    def loads_here(self) -> bool:
        """Return whether the first call would first load the model into this process."""
        return False

    def runs_here(self) -> bool:
        """Return whether calls run the model in this process, on this machine's cores."""
        return False

    def load(self) -> None:
        """Load the model into this process ahead of the first call (if it runs here)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} alias={self.alias!r}>"


class BaseChatModel(BaseModel):
    """A model that answers conversations."""

    supports_streaming: ClassVar[bool] = False
    max_input_tokens: int = 128_000

    def validate(self, request: ChatRequest) -> None:
        """Raise InvalidRequest unless this model can take ``request``."""
        if not request.messages:
            raise InvalidRequest("A chat request needs at least one message.",
                                 provider=self.provider)
        characters = sum(len(m.content) for m in request.messages)
        characters += sum(len(passage) for passage in request.context)
        if characters > self.max_input_tokens * CHARS_PER_TOKEN:
            raise InvalidRequest(
                f"The request is too long for {self.id} "
                f"(at most about {self.max_input_tokens} tokens).",
                provider=self.provider,
            )

    @abstractmethod
    def complete(self, request: ChatRequest, *, timeout: float) -> ChatResult:
        """Return the model's answer to ``request``."""

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        """Yield the answer in pieces; models that cannot stream yield it whole."""
        result = self.complete(request, timeout=timeout)
        yield StreamChunk(text=result.text, usage=result.usage, request_id=result.request_id)

    @property
    def extractive(self) -> bool:
        """Return whether answers are quoted from the context rather than generated."""
        return False


class BaseEmbeddingModel(BaseModel, ABC):
    """A model that turns texts into vectors."""

    max_batch_size: int = 64
    max_input_tokens: int = 8191

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Return the width of this model's vectors."""

    def validate(self, texts: Sequence[str]) -> None:
        """Raise InvalidRequest unless this model can embed ``texts`` in one call."""
        if len(texts) > self.max_batch_size:
            raise InvalidRequest(
                f"{self.id} embeds at most {self.max_batch_size} texts per call.",
                provider=self.provider,
            )

    @abstractmethod
    def embed(self, texts: Sequence[str], *, timeout: float) -> EmbeddingResult:
        """Return one vector per text."""
