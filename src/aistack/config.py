"""Configuration from the environment: the one place that reads ``os.environ``."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

import limits

DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
N = TypeVar("N", int, float)


class ConfigError(Exception):
    """The environment holds a value aistack cannot use."""


def _flag(value: str | None, *, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _csv(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def sentinel_master_of(redis_url: str) -> str:
    """Return the master's name in a ``REDIS_URL`` used with Sentinel, as written (names
    are case-sensitive)."""
    return urlsplit(redis_url).netloc.rpartition("@")[2]


def _sentinels_of(value: str | None, redis_url: str | None) -> tuple[tuple[str, int], ...]:
    """Parse ``REDIS_SENTINELS``: ``host:port`` pairs joined by commas (port 26379 if none);
    an IPv6 address goes in brackets.

    With sentinels, ``REDIS_URL`` names the master instead of a host, as in
    ``redis://:password@mymaster/0``.
    """
    if not value or not value.strip():
        return ()
    master = urlsplit(redis_url or "")
    name = sentinel_master_of(redis_url or "")
    if (master.scheme != "redis" or not name or ":" in name or master.query
            or not re.fullmatch(r"/?[0-9]*", master.path)):
        raise ConfigError("REDIS_SENTINELS needs REDIS_URL to name the master the sentinels "
                          "watch, with no port, as redis://mymaster/0 (or "
                          f"redis://:password@mymaster/0); got {redis_url or 'none'}")
    sentinels = []
    for item in _csv(value):
        bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?", item)
        if bracketed:
            host, port = bracketed[1], bracketed[2] or "26379"
        else:
            host, _, port = item.partition(":") if ":" in item else (item, "", "26379")
            host = "" if any(c in host for c in "/:@[]") else host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                "REDIS_SENTINELS must be host:port pairs joined by commas (an IPv6 address "
                f"in brackets, as [fd00::1]:26379); got {item!r}")
        sentinels.append((host, int(port)))
    return tuple(sentinels)


def _number(value: str | None, *, name: str, default: N, parse: Callable[[str], N],
            minimum: float = 0, inclusive: bool = False) -> N:
    if value is None or value == "":
        return default
    try:
        number = parse(value)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if number < minimum or (number == minimum and not inclusive):
        bound = "negative" if inclusive else "zero or negative"
        raise ConfigError(f"{name} must not be {bound}, got {number}")
    return number


def _positive_int(value: str | None, *, name: str, default: int) -> int:
    return _number(value, name=name, default=default, parse=int)


def _positive_float(value: str | None, *, name: str, default: float) -> float:
    return _number(value, name=name, default=default, parse=float)


def _non_negative_float(value: str | None, *, name: str) -> float:
    return _number(value, name=name, default=0.0, parse=float, inclusive=True)


def _non_negative_int(value: str | None, *, name: str, default: int) -> int:
    return _number(value, name=name, default=default, parse=int, inclusive=True)


def _choice(value: str | None, *, name: str, choices: tuple[str, ...], default: str) -> str:
    text = (value or "").strip().lower() or default
    if text not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return text


def _usd(value: str | None, *, name: str) -> Decimal | None:
    if value is None or value.strip() == "":
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise ConfigError(f"{name} must be an amount in USD, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"{name} must be a non-negative amount in USD, got {value!r}")
    return amount


def _rate_limit(value: str | None, *, name: str, default: str) -> str:
    text = default if value is None or value.strip() == "" else value.strip()
    if text.lower() == "off":
        return ""
    try:
        limits.parse_many(text)
    except ValueError:
        raise ConfigError(
            f"{name} must look like 60/minute (several joined by ';'), or off; got {value!r}"
        ) from None
    return text


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything aistack takes from its environment."""

    home: Path
    database_url: str | None
    database_replica_urls: tuple[str, ...]
    redis_url: str | None
    redis_sentinels: tuple[tuple[str, int], ...]
    secret_key: str | None
    secret_key_fallbacks: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    debug: bool
    https: bool
    ssl_redirect: bool
    hsts_seconds: int
    log_level: str
    chat_model: str
    fallback_chat_models: tuple[str, ...]
    embedding_model: str
    local_models_in: str
    document_max_chars: int
    upload_max_bytes: int
    job_lease_seconds: int
    job_pending_timeout_seconds: int
    reconcile_interval_seconds: int
    job_retry_backoff_seconds: float
    openai_api_key: str | None
    openai_base_url: str | None
    anthropic_api_key: str | None
    anthropic_base_url: str | None
    ollama_base_url: str
    ai_timeout_seconds: float
    ai_max_attempts: int
    ai_retry_backoff_seconds: float
    ai_scripted_latency_seconds: float
    ai_circuit_open_seconds: float
    web_workers: int
    database_pool_size: int
    search_cache_mb: int
    uploads_s3_bucket: str | None
    uploads_s3_endpoint_url: str | None
    uploads_s3_region: str | None
    event_streams_per_user: int
    metrics_token: str | None
    prometheus_multiproc_dir: Path
    local_model_dir: Path
    ai_workspace_monthly_budget_usd: Decimal | None
    ai_user_monthly_budget_usd: Decimal | None
    ai_rate_limit: str
    login_failures_per_address: str
    write_rate_limit: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from ``environ`` (the process environment by default)."""
        env = os.environ if environ is None else environ
        return cls(
            home=Path(env.get("AISTACK_HOME") or ".aistack").expanduser().resolve(),
            database_url=env.get("DATABASE_URL") or None,
            database_replica_urls=_csv(env.get("DATABASE_REPLICA_URLS")),
            redis_url=env.get("REDIS_URL") or None,
            redis_sentinels=_sentinels_of(env.get("REDIS_SENTINELS"), env.get("REDIS_URL")),
            secret_key=env.get("SECRET_KEY") or None,
            secret_key_fallbacks=_csv(env.get("SECRET_KEY_FALLBACKS")),
            allowed_hosts=_csv(env.get("ALLOWED_HOSTS")) or DEFAULT_ALLOWED_HOSTS,
            debug=_flag(env.get("DEBUG"), name="DEBUG", default=False),
            https=_flag(env.get("HTTPS"), name="HTTPS", default=False),
            ssl_redirect=_flag(env.get("SECURE_SSL_REDIRECT"), name="SECURE_SSL_REDIRECT",
                               default=True),
            hsts_seconds=_non_negative_int(
                env.get("HSTS_SECONDS"), name="HSTS_SECONDS", default=365 * 24 * 3600
            ),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            chat_model=env.get("AI_CHAT_MODEL") or "local:extractive",
            fallback_chat_models=_csv(env.get("AI_FALLBACK_CHAT_MODELS")),
            embedding_model=env.get("AI_EMBEDDING_MODEL") or "local:all-MiniLM-L6-v2-int8",
            local_models_in=_choice(env.get("AI_LOCAL_MODELS_IN"), name="AI_LOCAL_MODELS_IN",
                                    choices=("process", "worker", "auto"), default="process"),
            document_max_chars=_positive_int(
                env.get("DOCUMENT_MAX_CHARS"), name="DOCUMENT_MAX_CHARS", default=1_000_000
            ),
            upload_max_bytes=_positive_int(
                env.get("UPLOAD_MAX_BYTES"), name="UPLOAD_MAX_BYTES", default=20 * 1024 * 1024
            ),
            job_lease_seconds=_positive_int(
                env.get("JOB_LEASE_SECONDS"), name="JOB_LEASE_SECONDS", default=120
            ),
            job_pending_timeout_seconds=_positive_int(
                env.get("JOB_PENDING_TIMEOUT_SECONDS"),
                name="JOB_PENDING_TIMEOUT_SECONDS",
                default=300,
            ),
            reconcile_interval_seconds=_positive_int(
                env.get("RECONCILE_INTERVAL_SECONDS"),
                name="RECONCILE_INTERVAL_SECONDS",
                default=30,
            ),
            job_retry_backoff_seconds=_positive_float(
                env.get("JOB_RETRY_BACKOFF_SECONDS"), name="JOB_RETRY_BACKOFF_SECONDS", default=2.0
            ),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            ollama_base_url=env.get("OLLAMA_BASE_URL") or "http://localhost:11434/v1",
            ai_timeout_seconds=_positive_float(
                env.get("AI_TIMEOUT_SECONDS"), name="AI_TIMEOUT_SECONDS", default=60.0
            ),
            ai_max_attempts=_positive_int(
                env.get("AI_MAX_ATTEMPTS"), name="AI_MAX_ATTEMPTS", default=3
            ),
            ai_retry_backoff_seconds=_positive_float(
                env.get("AI_RETRY_BACKOFF_SECONDS"), name="AI_RETRY_BACKOFF_SECONDS", default=0.5
            ),
            ai_scripted_latency_seconds=_non_negative_float(
                env.get("AI_SCRIPTED_LATENCY_SECONDS"), name="AI_SCRIPTED_LATENCY_SECONDS"
            ),
            ai_circuit_open_seconds=_positive_float(
                env.get("AI_CIRCUIT_OPEN_SECONDS"), name="AI_CIRCUIT_OPEN_SECONDS", default=30.0
            ),
            # The name uvicorn, gunicorn and most hosts use for the number of web processes.
            # Two: Python serves one request at a time per process, and a small server
            # has two cores.
            web_workers=_positive_int(
                env.get("WEB_CONCURRENCY"), name="WEB_CONCURRENCY", default=2
            ),
            search_cache_mb=_positive_int(
                env.get("SEARCH_CACHE_MB"), name="SEARCH_CACHE_MB", default=128
            ),
            uploads_s3_bucket=env.get("UPLOADS_S3_BUCKET") or None,
            uploads_s3_endpoint_url=env.get("UPLOADS_S3_ENDPOINT_URL") or None,
            uploads_s3_region=env.get("UPLOADS_S3_REGION") or None,
            database_pool_size=_positive_int(
                env.get("DATABASE_POOL_SIZE"), name="DATABASE_POOL_SIZE", default=4
            ),
            # A browser holds one per open tab; more is a client that never closes its own.
            event_streams_per_user=_positive_int(
                env.get("EVENT_STREAMS_PER_USER"), name="EVENT_STREAMS_PER_USER", default=20
            ),
            metrics_token=env.get("METRICS_TOKEN") or None,
            prometheus_multiproc_dir=Path(
                env.get("PROMETHEUS_MULTIPROC_DIR")
                or Path(env.get("AISTACK_HOME") or ".aistack") / "metrics"
            ).expanduser().resolve(),
            local_model_dir=Path(
                env.get("LOCAL_MODEL_DIR") or Path(env.get("AISTACK_HOME") or ".aistack") / "models"
            ).expanduser().resolve(),
            ai_workspace_monthly_budget_usd=_usd(
                env.get("AI_WORKSPACE_MONTHLY_BUDGET_USD"), name="AI_WORKSPACE_MONTHLY_BUDGET_USD"
            ),
            ai_user_monthly_budget_usd=_usd(
                env.get("AI_USER_MONTHLY_BUDGET_USD"), name="AI_USER_MONTHLY_BUDGET_USD"
            ),
            ai_rate_limit=_rate_limit(env.get("AI_RATE_LIMIT"), name="AI_RATE_LIMIT",
                                      default="60/minute"),
            login_failures_per_address=_rate_limit(
                env.get("LOGIN_FAILURES_PER_ADDRESS"), name="LOGIN_FAILURES_PER_ADDRESS",
                default="20/15 minutes",
            ),
            write_rate_limit=_rate_limit(env.get("WRITE_RATE_LIMIT"), name="WRITE_RATE_LIMIT",
                                         default="60/minute"),
        )

    @staticmethod
    def celery_broker_url(redis_url: str,
                          sentinels: Sequence[tuple[str, int]] = ()) -> str:
        """Return the Celery (kombu) spelling of a Redis URL: unix sockets and Sentinel differ.

        Through Sentinel, kombu takes one ``sentinel://`` URL per sentinel; the first
        carries the master's password and database, and the master's name goes in the
        transport options.
        """
        if sentinels:
            master = urlsplit(redis_url)
            # Spelled out again: a ';' left as it is would split kombu's list of URLs.
            credentials = ":".join(
                quote(unquote(part), safe="") for part in
                master.netloc.rpartition("@")[0].split(":", 1)) if "@" in master.netloc else ""
            return ";".join(
                f"sentinel://{credentials + '@' if credentials else ''}"
                f"{f'[{host}]' if ':' in host else host}:{port}{master.path}"
                for host, port in sentinels)
        if redis_url.startswith("unix://"):
            return "redis+socket://" + redis_url.removeprefix("unix://")
        return redis_url

    def resolved_secret_key(self) -> str:
        """Return SECRET_KEY, or a random key kept in the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.home / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key
