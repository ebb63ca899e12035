"""Structured logs: one JSON object per line, with the request id of the work it belongs to.

Code logs through structlog (``structlog.stdlib.get_logger(name)``); libraries log
through the standard library. Both end up as JSON lines carrying the context bound
with :func:`request_id_bind`: the id of the HTTP request, or of the job a request
enqueued, so one id follows a request into its jobs and their model calls.
"""

from __future__ import annotations

import logging
import logging.config
import re
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Marks records whose message is already the finished JSON line.
_RENDERED = "aistack_rendered"
_REQUEST_ID_KEY = "request_id"
# Ids from clients are echoed into logs and headers: short and plain, or replaced.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_COMMON: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _to_stdlib(
    logger: WrappedLogger, method_name: str, line: str | EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (line,), {"extra": {_RENDERED: True}}


def configure(logging_settings: Mapping[str, Any]) -> None:
    """Set up structlog and the standard library's logging (Django's ``LOGGING_CONFIG``)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_COMMON,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
            _to_stdlib,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(dict(logging_settings))


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """Render every log record as one JSON line."""

    def __init__(self) -> None:
        super().__init__(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=_COMMON,
        )

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as JSON; structlog's records arrive rendered already."""
        if getattr(record, _RENDERED, False):
            return record.getMessage()
        return super().format(record)


def request_id() -> str | None:
    """Return the id of the request or job this code runs for, if any."""
    value: str | None = structlog.contextvars.get_contextvars().get(_REQUEST_ID_KEY)
    return value


def request_id_bind(candidate: str | None = None, **context: Any) -> str:
    """Start a new log context for a request or job; return its id (``candidate`` if usable)."""
    value = candidate if candidate and _REQUEST_ID_PATTERN.fullmatch(candidate) else None
    value = value or uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{_REQUEST_ID_KEY: value}, **context)
    return value


def request_id_forget() -> None:
    """End the log context of a request or job."""
    structlog.contextvars.clear_contextvars()

