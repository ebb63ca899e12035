"""The models connected from the Models page, and how every process comes to use them.

Which wins: the page. While a chat model is saved there, it and its fallbacks are the chat
models of every process (web, workers, CLI), whatever AI_CHAT_MODEL and
AI_FALLBACK_CHAT_MODELS say; "Use the environment's" blanks it and gives those back.
An embedding model saved there wins over AI_EMBEDDING_MODEL the same way; since vectors
of two models cannot be compared, search moves to it only once every document has been
embedded again (``aistack.retrieval.reindex.embedding_switch``).

The page has one connection (provider, address, key). An embedding model reached over it
is named ``page:<sdk>:<model>``, so its vectors are never taken for those of a model of
the same name reached over the environment's connection; and the connection cannot change
while search depends on it (``connection_used_by``).

PostgreSQL keeps the setup; Redis tells processes about it sooner. A save or a clear raises
the row's revision, then publishes the row (its API key still encrypted) under
PUBLISHED_KEY. Each process reads that key at most every REFRESH_SECONDS when it next needs
a chat model, and the row itself every REREAD_SECONDS, and takes whichever has the higher
revision: a publish that Redis lost delays a change by REREAD_SECONDS at most. The summary
fast path, in the event loop, never waits on either: it uses what its process last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import OperationalError, transaction
from django.utils import timezone
from psycopg_pool import PoolTimeout

from aistack.ai import (
    PAGE_MODEL_PREFIX,
    PROVIDERS,
    InvalidModelError,
    chat_models,
    embedding_models,
)
from aistack.ai import services as ai
from aistack.ai.backends.http import is_loopback
from aistack.ai.base import BaseModel
from aistack.ai.exceptions import (
    AIError,
    BadResponse,
    ConnectionFailed,
    Misconfigured,
    RateLimited,
    Timeout,
    Unavailable,
)
from aistack.ai.models import SETUP_ID, ModelSetup, Provider
from aistack.ai.secrets import SecretUnreadable, secret_decrypt, secret_encrypt
from aistack.ai.types import ChatRequest, Message
from aistack.cache import REDIS_UNREACHABLE
from aistack.errors import Invalid
from aistack.usage.types import Attribution

logger = logging.getLogger(__name__)

FEATURE = "models"
PUBLISHED_KEY = "ai:model-setup"
REFRESH_SECONDS = 2.0
REREAD_SECONDS = 30.0
# The SDK each provider is reached with; any OpenAI-compatible server speaks OpenAI's.
BACKENDS = {Provider.OPENAI: "openai", Provider.ANTHROPIC: "anthropic",
            Provider.OLLAMA: "ollama", Provider.COMPATIBLE: "openai"}
# Providers that refuse a request without a key (a compatible server or Ollama takes any).
NEEDS_KEY = frozenset({Provider.OPENAI, Provider.ANTHROPIC})
TEST_QUESTION = "Reply with one short sentence: which model are you?"
TEST_MAX_OUTPUT_TOKENS = 60
# Ollama's own API (not its OpenAI-compatible one) lists the models it has pulled.
OLLAMA_DEFAULT = "http://localhost:11434"
OLLAMA_PROBE_SECONDS = 1.0
# What the row says before anything was saved: the environment's models.
_NOTHING_SET = {"revision": 0, "provider": "", "base_url": "", "api_key_encrypted": "",
                "chat_model": "", "fallbacks": "", "embedding_model": "",
                "embedding_dimensions": 0, "embedding_chosen": False}
# The built-in embedding models, offered on the page.
LOCAL_PREFIX = "local:"
EMBED_TEST_TEXT = "aistack checks that this model embeds."


@dataclass(frozen=True)
class PageModels:
    """What the page set: chat settings entries by alias (none: the environment's), the
    fallbacks' aliases, the embedding model's entry, and the page's connection."""

    revision: int
    # Hold the decrypted key: never in a repr, a log line or a traceback's locals.
    models: dict[str, dict[str, Any]] = field(repr=False)
    fallbacks: list[str]
    embedding: dict[str, Any] | None = field(repr=False)
    # Whether the page ever chose the embedding model (then workers switch search to it).
    embedding_chosen: bool
    # The SDK the page connects with ("" when it connects nothing), and its options.
    backend: str
    options: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class TestOutcome:
    """What one call to a model gave: its answer, or the error in plain words."""

    ok: bool
    text: str
    model: str


# --- What the page reads and writes ---------------------------------------------------


def model_setup_get() -> ModelSetup | None:
    """Return the setup saved on the Models page, if any."""
    return ModelSetup.objects.filter(pk=SETUP_ID).select_related("updated_by").first()


def _problem(field: str, message: str) -> Invalid:
    return Invalid(message, details={field: [message]})


def _base_url_checked(provider: Provider, base_url: str) -> str:
    base_url = base_url.strip()
    if not base_url:
        if provider == Provider.COMPATIBLE:
            raise _problem("base_url", "An OpenAI-compatible server needs its address, "
                                       "like http://127.0.0.1:8080/v1.")
        return ""
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:  # "http://[::1", a port that is not a number
        host = None
    unprintable = any(character.isspace() or not character.isprintable()
                      for character in base_url)
    if host is None or parts.scheme not in ("http", "https") or unprintable:
        raise _problem("base_url", "The address must be a URL starting with http:// or "
                                   "https://, like http://127.0.0.1:8080/v1.")
    return base_url


def _fallbacks_checked(text: str) -> list[str]:
    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    for spec in specs:
        provider, _, model = spec.partition(":")
        if provider not in PROVIDERS or not model:
            raise _problem("fallbacks", f"“{spec}” is not provider:model, with a provider "
                                        f"from {', '.join(PROVIDERS)}.")
    return specs


@transaction.atomic
def model_setup_save(*, provider: str, base_url: str, api_key: str, chat_model: str,
                     fallbacks: str, user: User,
                     connection_used_by: Sequence[str] = ()) -> ModelSetup:
    """Save the chat model to use everywhere.

    An empty ``api_key`` keeps the saved key, but only for the same provider at the same
    address: a key is never sent anywhere it was not typed in for. ``connection_used_by``
    names the embedding models search still reads vectors of: while one of them is
    reached over the page's connection, its provider and address stay as they are.
    """
    try:
        chosen = Provider(provider)
    except ValueError:
        raise _problem("provider", "Choose a provider.") from None
    chat_model = chat_model.strip()
    if not chat_model or any(character.isspace() for character in chat_model):
        raise _problem("chat_model", "Name the chat model, like gpt-4.1-mini.")
    base_url = _base_url_checked(chosen, base_url)
    specs = _fallbacks_checked(fallbacks)
    setup = _locked_setup()
    if (setup.provider, setup.base_url) != (chosen, base_url):
        _connection_unused(setup, connection_used_by, field="base_url")
    api_key = api_key.strip()
    if api_key:
        setup.api_key_encrypted = secret_encrypt(api_key)
    elif (setup.provider, setup.base_url) != (chosen, base_url):
        setup.api_key_encrypted = ""
    if chosen in NEEDS_KEY and not setup.api_key_encrypted:
        raise _problem("api_key", f"{chosen.label} needs an API key.")
    setup.provider, setup.base_url, setup.chat_model = chosen, base_url, chat_model
    setup.fallbacks = ", ".join(specs)
    _revised(setup, user)
    logger.info("chat model set on the Models page", extra={
        "model": str(setup), "fallbacks": setup.fallbacks, "user_id": user.pk})
    return setup


def _locked_setup() -> ModelSetup:
    # Created first if need be, so that two saves at once queue on the same row.
    ModelSetup.objects.get_or_create(pk=SETUP_ID)
    return ModelSetup.objects.select_for_update().get(pk=SETUP_ID)


def _revised(setup: ModelSetup, user: User) -> None:
    setup.revision += 1
    setup.updated_by = user
    setup.save()
    transaction.on_commit(_changed)


def _changed() -> None:
    _publish()
    # This process reads the row itself when it next needs a chat model.
    follower.checked_at, follower.read_at = -REFRESH_SECONDS, -REREAD_SECONDS


@transaction.atomic
def model_setup_clear(*, user: User, connection_used_by: Sequence[str] = ()) -> None:
    """Forget the page's chat models and connection: the environment's chat models apply
    again. (An embedding model saved there stays, unless it needs that connection, which
    is then refused.)"""
    setup = _locked_setup()
    _connection_unused(setup, connection_used_by, field="__all__")
    setup.provider = setup.base_url = setup.api_key_encrypted = ""
    setup.chat_model = setup.fallbacks = ""
    _revised(setup, user)


def _connection_unused(setup: ModelSetup, used_by: Sequence[str], *, field: str) -> None:
    """Refuse to change the page's connection while search reads vectors made over it."""
    needing = sorted({spec for spec in (*used_by, setup.embedding_model)
                      if spec.startswith(PAGE_MODEL_PREFIX)})
    if needing:
        raise _problem(field, f"Search uses {', '.join(needing)} over this connection, so its "
                              "provider and address cannot change now. Choose another "
                              "embedding model first and wait until search has switched "
                              "to it.")


def model_setup_embedding_save(*, embedding_model: str, user: User) -> str:
    """Save the embedding model every process embeds with ("" for AI_EMBEDDING_MODEL),
    after one real call to it; return its name.

    ``local:<name>`` is a built-in model; any other name is a model of the provider the
    page connects to, reached over that connection. Search keeps the current model's
    vectors until every document has vectors of the new one.
    """
    wanted = embedding_model.strip()
    width = 0
    saved = model_setup_get()
    if wanted:
        wanted, width = _embedding_tried(wanted, saved=saved, user=user)
    with transaction.atomic():
        setup = _locked_setup()
        # The call was made outside the transaction: the connection it used must be the
        # one saved now.
        if wanted.startswith(PAGE_MODEL_PREFIX) and saved is not None and (
                setup.provider, setup.base_url, setup.api_key_encrypted) != (
                saved.provider, saved.base_url, saved.api_key_encrypted):
            raise _problem("embedding_model", "The connection changed while the model was "
                                              "tried: try again.")
        setup.embedding_model, setup.embedding_dimensions = wanted, width
        setup.embedding_chosen_at = timezone.now()
        _revised(setup, user)
    logger.info("embedding model set on the Models page",
                extra={"model": wanted, "dimensions": width, "user_id": user.pk})
    return wanted


def _embedding_tried(wanted: str, *, saved: ModelSetup | None, user: User) -> tuple[str, int]:
    """Return the model's full name and the width of its vectors, from one call to it."""
    if any(character.isspace() or not character.isprintable() for character in wanted):
        raise _problem("embedding_model", "A model name has no spaces, like "
                                          "text-embedding-3-small or local:all-MiniLM-L6-v2-int8.")
    if wanted.startswith(LOCAL_PREFIX):
        entry = _embedding_entry(wanted, options={})
    elif saved is None or not saved.provider:
        raise _problem("embedding_model", "Connect a provider above first, or choose a "
                                          "built-in model (local:…).")
    else:
        backend = BACKENDS[Provider(saved.provider)]
        if backend == "anthropic":
            raise _problem("embedding_model", "Anthropic has no embedding models: choose a "
                                              "built-in one (local:…).")
        name = wanted.removeprefix(f"{backend}:")
        if not name:
            raise _problem("embedding_model", "Name the embedding model, like "
                                              "text-embedding-3-small.")
        wanted = f"{PAGE_MODEL_PREFIX}{backend}:{name}"
        entry = _embedding_entry(wanted, options=_connection(
            provider=Provider(saved.provider), base_url=saved.base_url,
            api_key=_saved_key(saved)))
    try:
        model = embedding_models.build(entry, alias="test")
    except InvalidModelError as exc:
        raise _problem("embedding_model", str(exc)) from None
    # A remote model's width is measured below rather than looked up.
    if model.provider == "local" and (problems := model.check()):
        raise _problem("embedding_model", f"{model.id}: {'; '.join(problems)}.")
    try:
        vectors = ai.embedding_model_try(
            model=model, texts=[EMBED_TEST_TEXT],
            attribution=Attribution(feature=FEATURE, user_id=user.pk)).vectors
    except AIError as exc:
        raise _problem("embedding_model", _plain_error(
            model, exc, api_key=_saved_key(saved) if saved else "")) from None
    width = len(vectors[0]) if vectors else 0
    if width == 0:
        raise _problem("embedding_model", f"{model.id} answered with no vector.")
    return wanted, width


def _saved_key(setup: ModelSetup) -> str:
    if not setup.api_key_encrypted:
        return ""
    with contextlib.suppress(SecretUnreadable):
        return secret_decrypt(setup.api_key_encrypted)[0]
    return ""


def model_setup_key_state(setup: ModelSetup | None) -> str:
    """Return "none", "saved", or "unreadable" (made under a SECRET_KEY no longer known)."""
    if setup is None or not setup.api_key_encrypted:
        return "none"
    try:
        secret_decrypt(setup.api_key_encrypted)
    except SecretUnreadable:
        return "unreadable"
    return "saved"


def _entry(provider: str, model: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"BACKEND": f"aistack.ai.backends.{provider}.ChatModel", "MODEL": model,
            "OPTIONS": options}


def _connection(*, provider: Provider, base_url: str, api_key: str) -> dict[str, Any]:
    """Return the options of the page's connection: its key and address replace the
    environment's, for the models reached over it alone."""
    backend = BACKENDS[provider]
    options = dict(settings.AI_PROVIDER_OPTIONS.get(backend, {}))
    if backend != "ollama":
        options["API_KEY"] = api_key or None
    options["BASE_URL"] = base_url or (None if backend != "ollama" else options.get("BASE_URL"))
    return options


def _chat_entry(*, provider: Provider, base_url: str, api_key: str,
                chat_model: str) -> dict[str, Any]:
    options = _connection(provider=provider, base_url=base_url, api_key=api_key)
    return _entry(BACKENDS[provider], chat_model, options)


def _embedding_entry(name: str, *, options: dict[str, Any],
                     dimensions: int = 0) -> dict[str, Any]:
    """Return the settings entry of ``local:<model>`` or ``page:<sdk>:<model>``."""
    if name.startswith(LOCAL_PREFIX):
        return {"BACKEND": "aistack.ai.backends.local.EmbeddingModel",
                "MODEL": name.removeprefix(LOCAL_PREFIX),
                "OPTIONS": settings.AI_PROVIDER_OPTIONS.get("local", {})}
    backend, _, model = name.removeprefix(PAGE_MODEL_PREFIX).partition(":")
    return {"BACKEND": f"aistack.ai.backends.{backend}.EmbeddingModel", "MODEL": model,
            "OPTIONS": {**options, **({"DIMENSIONS": dimensions} if dimensions else {})},
            "ID": name}


def _page_models(published: dict[str, Any]) -> PageModels | None:
    """Return the settings entries a published setup stands for (its key decrypted)."""
    embedding = published.get("embedding_model", "")
    chosen_embedding = bool(published.get("embedding_chosen"))
    if not published["chat_model"] and not embedding and not chosen_embedding:
        return None
    token = published["api_key_encrypted"]
    api_key = ""
    if token:
        try:
            api_key, _ = secret_decrypt(token)
        except SecretUnreadable:
            logger.error("the API key saved on the Models page cannot be decrypted: enter "
                         "it again there, or put the SECRET_KEY it was saved under in "
                         "SECRET_KEY_FALLBACKS")
    backend, options = "", {}
    if published["provider"]:
        chosen = Provider(published["provider"])
        backend = BACKENDS[chosen]
        options = _connection(provider=chosen, base_url=published["base_url"], api_key=api_key)
    models, fallbacks = {}, []
    if published["chat_model"]:
        models["default"] = _entry(backend, published["chat_model"], options)
        for n, spec in enumerate(_fallbacks_checked(published["fallbacks"]), start=1):
            provider, _, model = spec.partition(":")
            models[f"fallback-{n}"] = _entry(provider, model,
                                             settings.AI_PROVIDER_OPTIONS.get(provider, {}))
            fallbacks.append(f"fallback-{n}")
    return PageModels(
        revision=published["revision"], models=models, fallbacks=fallbacks,
        embedding=_embedding_entry(embedding, options=options,
                                   dimensions=published.get("embedding_dimensions", 0))
        if embedding else None,
        embedding_chosen=chosen_embedding, backend=backend, options=options)


def page_embedding_entry(name: str) -> tuple[int, dict[str, Any]]:
    """Return the page's revision and the settings entry of ``page:<sdk>:<model>``,
    reached over the page's connection."""
    page = page_models()
    backend = name.removeprefix(PAGE_MODEL_PREFIX).partition(":")[0]
    if page is None or page.backend != backend:
        raise InvalidModelError(f"{name} is reached over the Models page's connection, "
                                f"which no longer connects to {backend}")
    dimensions = (page.embedding or {}).get("OPTIONS", {}).get("DIMENSIONS", 0) \
        if (page.embedding or {}).get("ID") == name else 0
    return page.revision, _embedding_entry(name, options=page.options, dimensions=dimensions)


# --- How processes learn of it -----------------------------------------------------------


def _row_read() -> dict[str, Any]:
    """Return the setup's row as it is published, its key renewed if a fallback made it."""
    setup = ModelSetup.objects.filter(pk=SETUP_ID).first()
    if setup is None:
        return dict(_NOTHING_SET)
    if setup.api_key_encrypted:
        try:
            _, renewed = secret_decrypt(setup.api_key_encrypted)
        except SecretUnreadable:
            renewed = setup.api_key_encrypted
        if renewed != setup.api_key_encrypted:
            # Made under a SECRET_KEY now in SECRET_KEY_FALLBACKS: kept under the new one.
            ModelSetup.objects.filter(pk=SETUP_ID, api_key_encrypted=setup.api_key_encrypted
                                      ).update(api_key_encrypted=renewed)
            setup.api_key_encrypted = renewed
    return {"revision": setup.revision, "provider": setup.provider,
            "base_url": setup.base_url, "api_key_encrypted": setup.api_key_encrypted,
            "chat_model": setup.chat_model, "fallbacks": setup.fallbacks,
            "embedding_model": setup.embedding_model,
            "embedding_dimensions": setup.embedding_dimensions,
            "embedding_chosen": setup.embedding_chosen_at is not None}


def _cached() -> dict[str, Any] | None:
    try:
        found = cache.get(PUBLISHED_KEY)
    except REDIS_UNREACHABLE:
        return None
    return found if isinstance(found, dict) and "revision" in found else None


def _publish(row: dict[str, Any] | None = None) -> dict[str, Any]:
    """Publish the row (read now unless given) unless Redis has a newer one; return it."""
    row = row or _row_read()
    cached = _cached()
    if cached is None or cached["revision"] < row["revision"]:
        # Without Redis, each process reads the row again within REREAD_SECONDS.
        with contextlib.suppress(*REDIS_UNREACHABLE):
            cache.set(PUBLISHED_KEY, row, timeout=None)
    return row


class _Follower:
    """This process's view of the page's setup (see the module's docstring)."""

    def __init__(self) -> None:
        self.checked_at = -REFRESH_SECONDS
        self.read_at = -REREAD_SECONDS
        self.revision = -1
        self.current: PageModels | None = None
        self._lock = threading.Lock()

    def current_models(self) -> PageModels | None:
        now = time.monotonic()
        if _in_event_loop() or now - self.checked_at < REFRESH_SECONDS:
            return self.current
        self.checked_at = now
        found: dict[str, Any] | None = None
        if now - self.read_at >= REREAD_SECONDS:
            self.read_at = now
            found = _row_read_published()
        return self._forward(found if found is not None else _cached())

    def read_now(self) -> PageModels | None:
        """Read the row now, whatever was read lately (outside the event loop)."""
        if _in_event_loop():
            return self.current
        self.checked_at = self.read_at = time.monotonic()
        found = _row_read_published()
        return self._forward(found if found is not None else _cached())

    def _forward(self, found: dict[str, Any] | None) -> PageModels | None:
        with self._lock:
            # Only ever forward: Redis may hold an older revision than the row, and
            # another thread may have read a newer one meanwhile.
            if found is not None and found["revision"] > self.revision:
                self.revision = found["revision"]
                self.current = _page_models(found)
            return self.current


def _row_read_published() -> dict[str, Any] | None:
    try:
        # A savepoint: a failure must not abort a transaction the caller is in.
        with transaction.atomic():
            return _publish(_row_read())
    except Exception as exc:
        if isinstance(exc, OperationalError) and isinstance(exc.__cause__, PoolTimeout):
            # PostgreSQL is down, and this read has waited the pool's timeout for a
            # connection. Nearly every caller needs the database too (a model call is
            # recorded there): going on would have it wait that long again before its
            # 503. (A summary read from the cache alone answers 503 where it could have
            # answered: once in REREAD_SECONDS, and only while PostgreSQL is down.)
            raise
        # PostgreSQL restarting, or this process may not use it (a test's thread): what
        # Redis says, or the models already in use, will do until the next read.
        logger.warning("could not read the Models page's setup", exc_info=True)
        return None


def _in_event_loop() -> bool:
    # The summary fast path: nothing there may wait on the database or Redis for this.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


follower = _Follower()


def page_models() -> PageModels | None:
    """Return the models the Models page set, or None to use the environment's."""
    return follower.current_models()


def page_models_fresh() -> PageModels | None:
    """Return what the Models page set, read from PostgreSQL now: for a decision that
    must not act on a view a few seconds old."""
    return follower.read_now()


# --- Trying a model, and finding Ollama's -------------------------------------------------


def model_setup_test(*, provider: str, base_url: str, api_key: str, chat_model: str,
                     user: User) -> TestOutcome:
    """Make one real call to the model as the form describes it (a blank key: the saved
    one), through the provider layer; return its answer or its error in plain words."""
    try:
        chosen = Provider(provider)
    except ValueError:
        raise _problem("provider", "Choose a provider.") from None
    if not chat_model.strip():
        raise _problem("chat_model", "Name the chat model, like gpt-4.1-mini.")
    base_url = _base_url_checked(chosen, base_url)
    # The saved key only where it was saved for: the same provider at the same address.
    if not api_key.strip() and (saved := model_setup_get()) is not None \
            and (saved.provider, saved.base_url) == (chosen, base_url) \
            and saved.api_key_encrypted:
        try:
            api_key, _ = secret_decrypt(saved.api_key_encrypted)
        except SecretUnreadable as exc:
            return TestOutcome(ok=False, text=str(exc), model="")
    entry = _chat_entry(provider=chosen, base_url=base_url, api_key=api_key.strip(),
                        chat_model=chat_model.strip())
    model = chat_models.build(entry, alias="test")
    if problems := model.check():
        return TestOutcome(ok=False, text=f"{model.id}: {'; '.join(problems)}.", model=model.id)
    request = ChatRequest(messages=(Message(role="user", content=TEST_QUESTION),),
                          max_output_tokens=TEST_MAX_OUTPUT_TOKENS)
    try:
        result = ai.chat_model_try(model=model, request=request,
                                   attribution=Attribution(feature=FEATURE, user_id=user.pk))
    except AIError as exc:
        return TestOutcome(ok=False, text=_plain_error(model, exc, api_key=api_key.strip()),
                           model=model.id)
    return TestOutcome(ok=True, text=result.text.strip() or "(an empty answer)", model=model.id)


def _plain_error(model: BaseModel, error: AIError, *, api_key: str) -> str:
    """Say what went wrong in words a person setting up a model can act on."""
    status = f" (HTTP {error.status_code})" if error.status_code else ""
    where = model.options.get("BASE_URL") or f"{model.provider}'s address"
    if isinstance(error, Misconfigured) and error.status_code in (401, 403):
        what = f"the API key was refused{status}"
    elif isinstance(error, Misconfigured) and error.status_code == 404:
        what = f"the model or the address was not found{status}"
    elif isinstance(error, ConnectionFailed):
        what = f"nothing answered at {where}"
    elif isinstance(error, Timeout):
        what = f"no answer within {settings.AI_TIMEOUT_SECONDS:g} s"
    elif isinstance(error, RateLimited):
        what = f"the provider is rate limiting this key{status}"
    elif isinstance(error, Unavailable):
        what = f"the provider is unavailable{status}"
    elif isinstance(error, BadResponse):
        what = "its answer could not be read (is this the right kind of server?)"
    else:
        what = f"the request was refused{status}"
    said = error.message if error.message != (type(error).__doc__ or "").strip() else ""
    if api_key and said:
        said = said.replace(api_key, "…")  # a provider may quote the key back
    return f"{model.id} did not answer: {what}." + (f" It said: “{said}”" if said else "")


def ollama_models(base_url: str | None = None) -> list[str]:
    """Return the models of the Ollama server at ``base_url`` (its default address when
    None), or none when nothing answers there within a second."""
    root = (base_url or OLLAMA_DEFAULT).rstrip("/").removesuffix("/v1")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or (
            settings.AI_LOOPBACK_ONLY and not is_loopback(parts.hostname or "")):
        return []
    try:
        with urllib.request.urlopen(f"{root}/api/tags",  # noqa: S310 (http(s) only)
                                    timeout=OLLAMA_PROBE_SECONDS) as response:
            listed = json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return []
    models = listed.get("models") if isinstance(listed, dict) else None
    return sorted(str(m["name"]) for m in models or () if isinstance(m, dict) and "name" in m)
