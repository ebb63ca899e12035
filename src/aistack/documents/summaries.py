"""Document summaries: made in the background, served from a versioned cache.

A summary is *of* a version: the document's content hash, the prompt's version (a
hash of its text) and the model asked. The cache key holds that version, so an edit,
a changed prompt or another model each miss the old entry without anyone deleting it.
PostgreSQL keeps the last summary written, so an expired or flushed cache costs a
query, never a model call; and a cold key costs one model call however many callers
ask at once (single flight).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.core.cache import cache

from aistack.ai import chat_models
from aistack.ai import exceptions as ai_exceptions
from aistack.ai import services as ai
from aistack.ai.exceptions import app_error_for
from aistack.ai.prompts import PromptTemplate
from aistack.ai.types import ChatRequest
from aistack.cache import REDIS_UNREACHABLE
from aistack.documents.models import Document
from aistack.documents.selectors import DocumentRef
from aistack.errors import Conflict
from aistack.jobs import kinds
from aistack.jobs.exceptions import JobError, TransientJobError
from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.services import JobRun, job_enqueue
from aistack.redis.locks import single_flight
from aistack.transactions import connection_give_back
from aistack.usage.services import cache_lookups_record
from aistack.usage.types import Attribution

FEATURE = "summary"
DOCUMENT_SUMMARY = kinds.register(
    JobKind(
        name="documents.summary",
        task_name="aistack.documents.tasks.document_summarize",
        model_label="documents.Document",
        status_field="summary_status",
        error_field="summary_error",
        title_field="title",
    )
)
SUMMARY_PROMPT = PromptTemplate(
    name="summary",
    # Instructions in the system turn, the document in the user turn: every provider
    # accepts that shape (Anthropic requires a user turn). The length follows the
    # document's, as the built-in model's does (three sentences for a page, up to eight).
    system=(
        "Summarize the document the user sends for a teammate deciding whether to read "
        "it: about three sentences for a page, up to eight for a long report. Use only "
        "what the document says, in plain prose without headings or lists."
    ),
    user="Document:\n$content",
)
# How long a summary written by a fallback model is served before the configured
# model is tried again.
FALLBACK_CACHE_SECONDS = 600
# Between polls of the cache by callers waiting for another caller's summary.
WAIT_POLL_SECONDS = 0.05
_IN_FLIGHT = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})
# Failures a later attempt may not meet: the job retries these with backoff.
_TRANSIENT_AI_ERRORS = (ai_exceptions.ConnectionFailed, ai_exceptions.Timeout,
                        ai_exceptions.RateLimited, ai_exceptions.Unavailable)


@dataclass(frozen=True, kw_only=True)
class SummaryVersion:
    """What a summary is a summary of."""

    workspace_id: int
    document_id: int
    content_hash: str
    prompt_version: str
    model: str

    @property
    def fingerprint(self) -> str:
        """Return what the stored summary records of its version."""
        return f"{self.content_hash}/{self.prompt_version}/{self.model}"

    @property
    def cache_key(self) -> str:
        """Return the cache key of this version's summary."""
        return f"summary:{self.workspace_id}:{self.document_id}:{self.fingerprint}"


@dataclass(frozen=True, kw_only=True)
class Summary:
    """A summary's text."""

    text: str
    # Quoted from the document by the built-in model rather than written: shown as such.
    extractive: bool


@dataclass(frozen=True, kw_only=True)
class SummaryState:
    """What a reader is told about a document's summary."""

    status: JobStatus
    summary: str | None
    error: str
    # True when ``summary`` is of an older version of the document (or prompt, or model).
    stale: bool
    extractive: bool
    # False when asking again cannot help (see ``_retryable``): ``error`` says what to do.
    retryable: bool


def summary_version(*, document: Document | DocumentRef) -> SummaryVersion:
    """Return the version a summary of the document made now would have."""
    return SummaryVersion(
        workspace_id=document.workspace_id, document_id=document.pk,
        content_hash=document.content_hash, prompt_version=SUMMARY_PROMPT.version,
        model=chat_models["default"].id,
    )


def _summary_of(found: tuple[str, bool] | None) -> Summary | None:
    # Cached as plain values, not a pickled class that a later release might rename.
    return None if found is None else Summary(text=found[0], extractive=found[1])


def _cached(version: SummaryVersion) -> Summary | None:
    return _summary_of(cache.get(version.cache_key))


def _cache(version: SummaryVersion, summary: Summary, *, seconds: int | None = None) -> None:
    cache.set(version.cache_key, (summary.text, summary.extractive),
              timeout=seconds or settings.SUMMARY_CACHE_SECONDS)


def _found(document: Document, version: SummaryVersion) -> Summary | None:
    """Return the summary of ``version`` from the cache, or from the row and re-cache it."""
    summary = _cached(version)
    if summary is None and document.summary_version == version.fingerprint:
        summary = Summary(text=document.summary, extractive=document.summary_extractive)
        _cache(version, summary)
    cache_lookups_record(cache="summary", feature=FEATURE, workspace_id=version.workspace_id,
                         hits=int(summary is not None), misses=int(summary is None))
    return summary


def _complete(summary: Summary) -> SummaryState:
    return SummaryState(status=JobStatus.COMPLETE, summary=summary.text, error="", stale=False,
                        extractive=summary.extractive, retryable=True)


def _retryable(document: Document) -> bool:
    """Return whether a summary asked for again may succeed."""
    # A summary is made of the document's text. An upload has none until its index job
    # extracts it, and when that job failed (the file is too large, damaged, or holds no
    # text) a summary job would fail the same way, however often it ran.
    return not (document.awaits_parsing and document.embedding_status == JobStatus.FAILED)


def summary_state(*, document: Document) -> SummaryState:
    """Return the document's summary state without calling a model."""
    version = summary_version(document=document)
    if (summary := _found(document, version)) is not None:
        return _complete(summary)
    return SummaryState(
        status=JobStatus(document.summary_status), summary=document.summary or None,
        error=document.summary_error, stale=bool(document.summary_version),
        extractive=document.summary_extractive, retryable=_retryable(document),
    )


def _write(document: Document, version: SummaryVersion) -> Summary:
    result = ai.chat_complete(
        request=ChatRequest(messages=SUMMARY_PROMPT.render(content=document.content),
                            context=(document.content,), task="summarize"),
        attribution=Attribution(feature=FEATURE, user_id=document.author_id,
                                workspace_id=version.workspace_id, object_id=document.pk,
                                prompt_version=version.prompt_version),
    )
    summary = Summary(text=result.text.strip(), extractive=result.extractive)
    # A fallback model wrote it (the configured one is down): record the model that did,
    # so the summary counts as stale, and cache it only briefly, so reads stay cheap
    # during the outage and the configured model is tried again after it.
    written = replace(version, model=result.model)
    # Only onto the content it summarizes: an edit made meanwhile keeps its own.
    Document.objects.filter(pk=document.pk, content_hash=version.content_hash).update(
        summary=summary.text, summary_version=written.fingerprint,
        summary_extractive=summary.extractive,
    )
    _cache(version, summary, seconds=None if written == version else FALLBACK_CACHE_SECONDS)
    return summary


def _awaited(version: SummaryVersion, *, seconds: float) -> Summary | None:
    # The writer needs a connection once the model answers: the waiters hold none.
    connection_give_back()
    deadline = time.monotonic() + seconds
    while (summary := _cached(version)) is None and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
    return summary


def _made(document: Document, version: SummaryVersion, *, wait: float) -> Summary | None:
    """Return the version's summary, calling the model only if no caller anywhere is.

    None when another caller is writing it and does not finish within ``wait`` seconds.
    """
    if (summary := _found(document, version)) is not None:
        return summary
    with single_flight(version.cache_key) as leader:
        if leader:
            # The previous holder may have written it between our miss and our lock.
            return _cached(version) or _write(document, version)
    return _awaited(version, seconds=wait)


def summary_cached(*, ref: DocumentRef) -> SummaryState | None:
    """Return the current summary if the cache holds it: the warm read, with no query."""
    version = summary_version(document=ref)
    return summary_from_cached(version, cache.get(version.cache_key))


def summary_from_cached(version: SummaryVersion, found: tuple[str, bool] | None
                        ) -> SummaryState | None:
    """Return the state for ``version``'s cache entry ``found``, read by the caller."""
    if (summary := _summary_of(found)) is None:
        return None  # the caller goes on to ``summary_read``, which counts the miss
    cache_lookups_record(cache="summary", feature=FEATURE, workspace_id=version.workspace_id,
                         hits=1, misses=0)
    return _complete(summary)


def summary_read(*, document: Document) -> SummaryState:
    """Return the document's summary, writing it now if it is missing and nothing is wrong."""
    version = summary_version(document=document)
    status = JobStatus(document.summary_status)
    if status == JobStatus.FAILED or document.awaits_parsing:
        # A failed summary is retried on request, not by every reader of the document.
        return summary_state(document=document)
    try:
        summary = _made(document, version, wait=settings.SUMMARY_READ_WAIT_SECONDS)
    except REDIS_UNREACHABLE:
        # Without Redis no reader can know it is the only one writing: rather than let
        # every reader call the model, show what PostgreSQL has; the job writes it.
        return summary_state(document=document)
    if summary is None:
        # Someone else is writing it: show the last summary meanwhile, marked stale.
        return SummaryState(
            status=JobStatus.PROCESSING, summary=document.summary or None, error="",
            stale=bool(document.summary_version), extractive=document.summary_extractive,
            retryable=True,
        )
    return _complete(summary)


def summary_request(*, document: Document) -> SummaryState:
    """Queue the document's summary unless it is current or already on its way.

    Refuses (409) when it cannot be made, rather than queue a job bound to fail.
    """
    state = summary_state(document=document)
    if not state.retryable:
        raise Conflict(f"The summary cannot be made: {state.error}")
    current = state.status == JobStatus.COMPLETE and not state.stale
    if current or state.status in _IN_FLIGHT:
        return state
    job_enqueue(kind=DOCUMENT_SUMMARY, object_id=document.pk, workspace_id=document.workspace_id)
    document.refresh_from_db(fields=["summary_status", "summary_error"])
    return summary_state(document=document)


def summary_shown(*, document: Document) -> SummaryState:
    """Return the state to show now, queueing a refresh of an outdated summary nobody makes."""
    state = summary_state(document=document)
    if state.status == JobStatus.COMPLETE and state.stale:
        return summary_request(document=document)
    return state


def document_summarize_run(*, run: JobRun) -> None:
    """Write a document's summary (the summary job's work)."""
    document = Document.objects.filter(pk=run.object_id).first()
    if document is None:
        return
    if document.awaits_parsing:
        raise TransientJobError("The document's text has not been extracted yet.")
    try:
        summary = _made(document, summary_version(document=document),
                        wait=settings.SUMMARY_READ_WAIT_SECONDS)
    except _TRANSIENT_AI_ERRORS as exc:
        raise TransientJobError(app_error_for(exc).message) from exc
    except ai_exceptions.AIError as exc:
        # The user sees why in summary_error: our words for it, never the provider's.
        raise JobError(app_error_for(exc).message) from exc
    if summary is None:
        raise TransientJobError("Another process is writing this summary.")
    # The summary is stored already (by version, so safely outside the job's
    # transaction); this completes the job, unless an edit superseded it meanwhile.
    with run.finishing():
        pass
