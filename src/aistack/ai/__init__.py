"""The one place where aistack talks to models, shaped like Django's cache framework.

``chat_models["default"]`` and ``embedding_models["default"]`` are backends built
lazily from the ``AI_CHAT_MODELS`` and ``AI_EMBEDDING_MODELS`` settings, each
``{alias: {"BACKEND": dotted path, "MODEL": name, "OPTIONS": {...}}}``. Application
code calls :mod:`aistack.ai.services`, which times, retries, falls back and records
every call; it never calls a backend, let alone a vendor SDK, itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.connection import BaseConnectionHandler
from django.utils.module_loading import import_string

from aistack.ai.base import BaseChatModel, BaseEmbeddingModel, BaseModel

M = TypeVar("M", bound=BaseModel)

PROVIDERS = ("openai", "anthropic", "ollama", "local", "scripted")


class InvalidModelError(ImproperlyConfigured):
    """A configured model cannot be built."""


def model_spec(params: Mapping[str, Any]) -> str:
    """Return the ``provider:model`` string a settings entry was built from."""
    module = str(params.get("BACKEND", "")).rpartition(".")[0]
    return f"{module.rpartition('.')[2]}:{params.get('MODEL', '')}"


def _build(params: Mapping[str, Any], alias: str, base: type[BaseModel]) -> Any:
    spec = model_spec(params)
    provider = spec.partition(":")[0]
    if provider not in PROVIDERS:
        raise InvalidModelError(
            f"unknown provider {provider!r} in {spec!r}: "
            f"write provider:model with a provider from {', '.join(PROVIDERS)}"
        )
    try:
        backend = import_string(params["BACKEND"])
    except ImportError as exc:
        raise InvalidModelError(f"cannot load the backend for {spec!r}: {exc}") from exc
    if not (isinstance(backend, type) and issubclass(backend, base)):
        raise InvalidModelError(f"{params['BACKEND']} is not a {base.__name__}")
    return backend(alias=alias, model=params.get("MODEL", ""), options=params.get("OPTIONS", {}))


class ModelHandler(BaseConnectionHandler[M]):
    """The configured models of one kind, one backend per alias, shared by every thread."""

    exception_class = InvalidModelError
    base: type[BaseModel]

    def __init__(self, *, settings_name: str, base: type[BaseModel]) -> None:
        super().__init__()
        self.settings_name = settings_name
        self.base = base
        self.reset()

    def reset(self) -> None:
        """Forget the settings read and the backends built from them."""
        self._settings = None
        self.__dict__.pop("settings", None)
        # Not per thread, unlike Django's database connections: under ASGI every request
        # runs in a thread of its own, and a backend per thread would build its SDK
        # client (HTTP pool, TLS context) on every request. Backends are thread-safe.
        self._connections = SimpleNamespace()

    def create_connection(self, alias: str) -> M:
        """Build the backend for ``alias``."""
        return self.build(self.settings[alias], alias=alias)

    def build(self, params: Mapping[str, Any], *, alias: str) -> M:
        """Build a backend of this kind from a settings entry, configured or not."""
        backend: M = _build(params, alias, self.base)
        return backend


@dataclass(frozen=True)
class _ChatSnapshot:
    """The chat models of one version of the configuration, built as they are asked for."""

    version: object
    entries: Mapping[str, Mapping[str, Any]]
    fallbacks: tuple[str, ...]
    built: dict[str, BaseChatModel] = field(default_factory=dict)


class ChatModelHandler(ModelHandler[BaseChatModel]):
    """The chat models: the environment's, or the Models page's while it sets some.

    Every process follows the page within seconds (see ``aistack.ai.setup``). Each version
    of the configuration is one snapshot, swapped whole under a lock: a caller gets the
    models and fallbacks of one version, never a mix of two.
    """

    def reset(self) -> None:
        """Forget the settings read and the backends built from them."""
        super().reset()
        self._lock = threading.Lock()
        self._snapshot: _ChatSnapshot | None = None

    def _current(self) -> _ChatSnapshot:
        from aistack.ai.setup import page_models

        page = page_models()
        version = page.revision if page is not None else None
        with self._lock:
            if self._snapshot is None or self._snapshot.version != version:
                self._snapshot = (
                    _ChatSnapshot(version=version, entries=page.models,
                                  fallbacks=tuple(page.fallbacks)) if page is not None else
                    _ChatSnapshot(version=None, entries=self.settings,
                                  fallbacks=tuple(settings.AI_CHAT_FALLBACKS)))
            return self._snapshot

    def _model(self, snapshot: _ChatSnapshot, alias: str) -> BaseChatModel:
        with self._lock:
            found = snapshot.built.get(alias)
            if found is None:
                if alias not in snapshot.entries:
                    raise InvalidModelError(f"The chat model {alias!r} is not configured.")
                found = snapshot.built[alias] = self.build(snapshot.entries[alias], alias=alias)
        return found

    def __getitem__(self, alias: str) -> BaseChatModel:
        return self._model(self._current(), alias)

    def chain(self) -> list[BaseChatModel]:
        """Return the default model, then its fallbacks in order, all of one version."""
        snapshot = self._current()
        return [self._model(snapshot, alias) for alias in ("default", *snapshot.fallbacks)]


chat_models: ChatModelHandler = ChatModelHandler(
    settings_name="AI_CHAT_MODELS", base=BaseChatModel)
embedding_models: ModelHandler[BaseEmbeddingModel] = ModelHandler(
    settings_name="AI_EMBEDDING_MODELS", base=BaseEmbeddingModel)
_other_embedding_models: dict[str, BaseEmbeddingModel] = {}


def embedding_model_for(spec: str) -> BaseEmbeddingModel:
    """Return the embedding model named ``provider:model``: the configured one or another.

    Vectors already stored stay searchable only with the model that made them, so
    while a new model's index is built, queries still need the old one.
    """
    default = embedding_models["default"]
    if default.id == spec:
        return default
    if spec not in _other_embedding_models:
        provider, _, model = spec.partition(":")
        params = {"BACKEND": f"aistack.ai.backends.{provider}.EmbeddingModel", "MODEL": model,
                  "OPTIONS": settings.AI_PROVIDER_OPTIONS.get(provider, {})}
        _other_embedding_models[spec] = _build(params, spec, BaseEmbeddingModel)
    return _other_embedding_models[spec]
