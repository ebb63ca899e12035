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
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.connection import BaseConnectionHandler
from django.utils.module_loading import import_string

from aistack.ai.base import BaseChatModel, BaseEmbeddingModel, BaseModel

M = TypeVar("M", bound=BaseModel)

PROVIDERS = ("openai", "anthropic", "ollama", "local", "scripted")
# How an embedding model reached over the Models page's connection is named
# (``page:openai:text-embedding-3-small``): its vectors are never taken for those of the
# same model reached over the environment's connection.
PAGE_MODEL_PREFIX = "page:"


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
    built = backend(alias=alias, model=params.get("MODEL", ""), options=params.get("OPTIONS", {}))
    built.named = params.get("ID")
    return built


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
class _Snapshot(Generic[M]):
    """The models of one version of the configuration, built as they are asked for."""

    version: object
    entries: Mapping[str, Mapping[str, Any]]
    fallbacks: tuple[str, ...]
    built: dict[str, M] = field(default_factory=dict)


class FollowingModelHandler(ModelHandler[M]):
    """Models of one kind: the environment's, or the Models page's while it sets some.

    Every process follows the page within seconds (see ``aistack.ai.setup``). Each version
    of the configuration is one snapshot, swapped whole under a lock: a caller gets the
    models (and fallbacks) of one version, never a mix of two.
    """

    def reset(self) -> None:
        """Forget the settings read and the backends built from them."""
        super().reset()
        self._lock = threading.Lock()
        self._snapshot: _Snapshot[M] | None = None

    def _from_page(self, page: Any) -> tuple[Mapping[str, Mapping[str, Any]], list[str]] | None:
        """Return the page's entries and fallbacks of this kind, or None for the settings'."""
        raise NotImplementedError

    def _fallbacks(self) -> list[str]:
        return []

    def _current(self) -> _Snapshot[M]:
        from aistack.ai.setup import page_models

        page = page_models()
        chosen = self._from_page(page) if page is not None else None
        version = page.revision if page is not None and chosen is not None else None
        with self._lock:
            if self._snapshot is None or self._snapshot.version != version:
                entries, fallbacks = chosen or (self.settings, self._fallbacks())
                self._snapshot = _Snapshot(version=version, entries=entries,
                                           fallbacks=tuple(fallbacks))
            return self._snapshot

    def _model(self, snapshot: _Snapshot[M], alias: str) -> M:
        with self._lock:
            found = snapshot.built.get(alias)
            if found is None:
                if alias not in snapshot.entries:
                    raise InvalidModelError(f"The model {alias!r} is not configured.")
                found = snapshot.built[alias] = self.build(snapshot.entries[alias], alias=alias)
        return found

    def __getitem__(self, alias: str) -> M:
        return self._model(self._current(), alias)

    def chain(self) -> list[M]:
        """Return the default model, then its fallbacks in order, all of one version."""
        snapshot = self._current()
        return [self._model(snapshot, alias) for alias in ("default", *snapshot.fallbacks)]


class ChatModelHandler(FollowingModelHandler[BaseChatModel]):
    """The chat models, with their fallbacks."""

    def _from_page(self, page: Any) -> tuple[Mapping[str, Mapping[str, Any]], list[str]] | None:
        return (page.models, page.fallbacks) if page.models else None

    def _fallbacks(self) -> list[str]:
        return list(settings.AI_CHAT_FALLBACKS)


class EmbeddingModelHandler(FollowingModelHandler[BaseEmbeddingModel]):
    """The embedding model (no fallbacks: vectors of two models cannot be compared)."""

    def _from_page(self, page: Any) -> tuple[Mapping[str, Mapping[str, Any]], list[str]] | None:
        return ({"default": page.embedding}, []) if page.embedding else None


chat_models: ChatModelHandler = ChatModelHandler(
    settings_name="AI_CHAT_MODELS", base=BaseChatModel)
embedding_models: EmbeddingModelHandler = EmbeddingModelHandler(
    settings_name="AI_EMBEDDING_MODELS", base=BaseEmbeddingModel)
_other_embedding_models: dict[tuple[str, int], BaseEmbeddingModel] = {}
_other_lock = threading.Lock()


def embedding_model_for(spec: str) -> BaseEmbeddingModel:
    """Return the embedding model named ``spec``: the configured one or another.

    Vectors already stored stay searchable only with the model that made them, so
    while a new model's index is built, queries still need the old one. A name the
    Models page gave (``page:provider:model``) is reached over the page's connection;
    any other ``provider:model`` over the environment's.
    """
    default = embedding_models["default"]
    if default.id == spec:
        return default
    if spec.startswith(PAGE_MODEL_PREFIX):
        from aistack.ai.setup import page_embedding_entry

        version, params = page_embedding_entry(spec)
    else:
        provider, _, model = spec.partition(":")
        version, params = 0, {"BACKEND": f"aistack.ai.backends.{provider}.EmbeddingModel",
                              "MODEL": model,
                              "OPTIONS": settings.AI_PROVIDER_OPTIONS.get(provider, {})}
    with _other_lock:
        found = _other_embedding_models.get((spec, version))
        if found is None:
            # One per name: a model built from an older version of the page goes.
            for key in [key for key in _other_embedding_models if key[0] == spec]:
                del _other_embedding_models[key]
            found = _other_embedding_models[(spec, version)] = _build(
                params, spec, BaseEmbeddingModel)
    return found
