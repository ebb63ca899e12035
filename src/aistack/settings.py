"""Django settings, built from :class:`aistack.config.Config`."""

from __future__ import annotations

import socket
from typing import Any

import dj_database_url
import django_stubs_ext
from csp.constants import NONE, SELF

from aistack.config import Config, sentinel_master_of

# Lets admin and other generic classes be subscripted at run time, as the type checker wants.
django_stubs_ext.monkeypatch()

CONFIG = Config.from_env()

SECRET_KEY = CONFIG.resolved_secret_key()
# Earlier keys, while sessions and stored API keys made with them are still in use.
SECRET_KEY_FALLBACKS = list(CONFIG.secret_key_fallbacks)
DEBUG = CONFIG.debug
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)
AISTACK_HOME = CONFIG.home

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "django_htmx",
    "aistack.accounts",
    "aistack.jobs",
    "aistack.documents",
    "aistack.retrieval",
    "aistack.ai",
    "aistack.usage",
    "aistack.observability",
    "aistack.realtime",
    "aistack.web",
    "aistack.chat",
]

MIDDLEWARE = [
    # First: every request gets its id and its timing, whatever answers it.
    "aistack.observability.middleware.ObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "aistack.documents.middleware.UploadSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "aistack.api.api_method_not_allowed",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "aistack.web.errors.ErrorPageMiddleware",
]

ROOT_URLCONF = "aistack.urls"
ASGI_APPLICATION = "aistack.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "aistack.web.context_processors.navigation",
            ],
        },
    },
]

# The CLI fills DATABASE_URL and REDIS_URL with the embedded services' URLs when they
# are unset, so by the time Django is configured both are always present.
DATABASES: dict[str, Any] = {
    "default": dj_database_url.parse(
        CONFIG.database_url or "postgresql://postgres@localhost/aistack",
        conn_max_age=0,
        conn_health_checks=True,
        engine="aistack.postgresql",
    )
}
# A request's connection is closed when it ends (CONN_MAX_AGE 0), so without a pool each
# request opens a new PostgreSQL connection, which costs more than its queries. Health
# checks make the pool test a connection before lending it: after a database restart,
# requests get fresh ones. (aistack.postgresql tests by the socket's state: no round trip.)
# The timeout bounds how long a request waits for a connection (then answers 503).
# A few per process: a request holds one only while it queries (it gives it back while
# it waits on a model, and an event stream once it has sent the current state), two
# cores run no more than a few queries at once anyway, and every PostgreSQL connection
# is a process of its own, with its own memory.
# When connecting fails, the pool retries with a doubling delay (1, 2, 4, 8 s...) and
# only a new attempt starts again from a short one: retries end after 5 s, so once
# PostgreSQL is back the next request's attempt connects, however long it was down.
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": 1, "max_size": CONFIG.database_pool_size, "timeout": 5,
    "reconnect_timeout": 5}
# Streaming replicas that search may read (aistack.replicas); nothing else reads them.
# A replica that stops answering is noticed within a few seconds (connecting: 1 s; a
# connection whose host vanished: TCP keepalives and tcp_user_timeout), then left alone.
DATABASE_REPLICAS: list[str] = []
for _n, _url in enumerate(CONFIG.database_replica_urls, start=1):
    _replica = dj_database_url.parse(_url, conn_max_age=0, conn_health_checks=True,
                                     engine="aistack.postgresql")
    _replica.setdefault("OPTIONS", {}).update({
        "connect_timeout": 1, "keepalives": 1, "keepalives_idle": 5,
        "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": 3000,
        "pool": {"min_size": 0, "max_size": CONFIG.database_pool_size, "timeout": 1,
                 "reconnect_timeout": 5}})
    # In tests, the test database itself.
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES[f"replica_{_n}"] = _replica
    DATABASE_REPLICAS.append(f"replica_{_n}")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = CONFIG.redis_url or "redis://localhost:6379/0"
# Redis through Sentinel (aistack.redis.connections): REDIS_URL then names the master the
# sentinels watch (redis://[:password@]<master name>/<db>), and every client of every
# process (cache, broker, pub/sub, locks, rate limits) asks them where it is.
REDIS_SENTINELS: list[tuple[str, int]] = list(CONFIG.redis_sentinels)
REDIS_SENTINEL_MASTER = sentinel_master_of(REDIS_URL) if REDIS_SENTINELS else ""
# A sentinel that does not answer is passed over for the next one within a second.
REDIS_SENTINEL_OPTIONS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
# Over TCP, a Redis connection whose peer vanished (its host lost power, the network
# split) is noticed within seconds: when idle or waiting on a blocking read by keepalive
# probes, when its request goes unanswered by TCP_USER_TIMEOUT. Without them the kernel
# waits out its retransmissions, about 15 minutes, and so would requests, workers and
# event relays still connected to a master that failed over.
REDIS_TCP_KEEPALIVE = {getattr(socket, name): value for name, value in (
    ("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 5000),
) if hasattr(socket, name)}
CACHES = {
    "default": {
        # Django's RedisCache, but a Redis outage reads as misses instead of failing requests.
        "BACKEND": "aistack.cache.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "aistack",
        "TIMEOUT": 300,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# Failed log-ins, counted in Redis over moving windows (aistack.accounts.throttling):
# past either limit a try is answered 429 before its password is hashed. The address
# limit is the one a deployment tunes ("" for none): all clients behind one NAT or one
# proxy share an address.
LOGIN_FAILURES_PER_ACCOUNT = "10/15 minutes"
LOGIN_FAILURES_PER_ADDRESS = CONFIG.login_failures_per_address
# The throttle comes first: while it refuses, no later backend hashes the password.
AUTHENTICATION_BACKENDS = [
    "aistack.accounts.throttling.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = CONFIG.home / "static"
# WhiteNoise warns about a missing STATIC_ROOT; collectstatic fills it in containers.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve app static files straight from the packages: `aistack serve` needs no collectstatic.
WHITENOISE_USE_FINDERS = True
# Only where releases before originals moved to PostgreSQL kept them (read until copied).
MEDIA_ROOT = CONFIG.home / "media"
# Uploaded originals: in PostgreSQL, or in an S3-compatible bucket (credentials from the
# usual AWS variables or the machine's role). Either way no process needs another's disk.
STORAGES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": CONFIG.uploads_s3_bucket,
                    "endpoint_url": CONFIG.uploads_s3_endpoint_url,
                    "region_name": CONFIG.uploads_s3_region,
                    # Private objects; a name taken is never overwritten.
                    "default_acl": None, "file_overwrite": False},
    } if CONFIG.uploads_s3_bucket else {"BACKEND": "aistack.documents.storage.DatabaseStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "documents"
LOGOUT_REDIRECT_URL = "login"

DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.document_max_chars * 4 + 64 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

DOCUMENT_MAX_CHARS = CONFIG.document_max_chars
UPLOAD_MAX_BYTES = CONFIG.upload_max_bytes
DOCUMENT_TITLE_MAX_CHARS = 300
API_PAGE_SIZE = 20
API_MAX_PAGE_SIZE = 100

# Chunking (token counts from the embedding model's tokenizer).
CHUNK_MAX_TOKENS = 200
CHUNK_OVERLAP_TOKENS = 32
# A document with more chunks than this is embedded by several jobs at once, this
# many chunks each; its index job waits for them (and at most this long, should the
# last part's wake-up be lost, before it looks again).
INDEX_PART_INPUTS = 512
INDEX_PARTS_WAIT_SECONDS = 3600

# Jobs: Celery delivers them, PostgreSQL holds their state.
JOB_LEASE_SECONDS = CONFIG.job_lease_seconds
JOB_PENDING_TIMEOUT_SECONDS = CONFIG.job_pending_timeout_seconds
JOB_MAX_RETRIES = 5
JOB_RETRY_BACKOFF_SECONDS = CONFIG.job_retry_backoff_seconds
JOB_RETRY_BACKOFF_MAX_SECONDS = 300.0

# Summaries: cached under versioned keys, so entries never need deleting, only expiring.
SUMMARY_CACHE_SECONDS = 7 * 24 * 3600
# How long a read waits for a summary another process is writing before it answers
# "processing" with the last summary it has.
SUMMARY_READ_WAIT_SECONDS = 3.0

# AI models, shaped like CACHES: one alias per model, each built from a `provider:model`
# string. Nothing is validated here: the system check in aistack.ai.checks reports a
# wrong string at start-up with a clear message.
AI_PROVIDER_OPTIONS: dict[str, dict[str, Any]] = {
    "openai": {"API_KEY": CONFIG.openai_api_key, "BASE_URL": CONFIG.openai_base_url},
    "anthropic": {"API_KEY": CONFIG.anthropic_api_key, "BASE_URL": CONFIG.anthropic_base_url},
    "ollama": {"BASE_URL": CONFIG.ollama_base_url},
    "scripted": {"LATENCY_SECONDS": CONFIG.ai_scripted_latency_seconds},
    # "worker": this process asks the workers to run the local models instead of loading
    # them (and their runtime) itself. `aistack web` does so unless told otherwise.
    "local": {"RUN_IN": CONFIG.local_models_in},
}


def _ai_model(spec: str, backend_class: str) -> dict[str, Any]:
    provider, _, model = spec.strip().partition(":")
    return {
        "BACKEND": f"aistack.ai.backends.{provider}.{backend_class}",
        "MODEL": model,
        "OPTIONS": AI_PROVIDER_OPTIONS.get(provider, {}),
    }


AI_CHAT_MODELS = {
    "default": _ai_model(CONFIG.chat_model, "ChatModel"),
    **{
        f"fallback-{n}": _ai_model(spec, "ChatModel")
        for n, spec in enumerate(CONFIG.fallback_chat_models, start=1)
    },
}
# Aliases of AI_CHAT_MODELS tried in order when the default one cannot serve.
AI_CHAT_FALLBACKS = [f"fallback-{n}" for n in range(1, len(CONFIG.fallback_chat_models) + 1)]
AI_EMBEDDING_MODELS = {"default": _ai_model(CONFIG.embedding_model, "EmbeddingModel")}
# Where the local int8 model is built from the packaged weights on first use, and kept.
LOCAL_MODEL_DIR = CONFIG.local_model_dir
AI_TIMEOUT_SECONDS = CONFIG.ai_timeout_seconds
AI_MAX_ATTEMPTS = CONFIG.ai_max_attempts
AI_RETRY_BACKOFF_SECONDS = CONFIG.ai_retry_backoff_seconds
AI_RETRY_BACKOFF_MAX_SECONDS = 20.0
# A provider that asks for a longer wait than this is treated as down: fall back instead.
AI_RETRY_AFTER_MAX_SECONDS = 30.0
AI_CIRCUIT_FAILURE_THRESHOLD = 5
AI_CIRCUIT_OPEN_SECONDS = CONFIG.ai_circuit_open_seconds
# How stale a process's view of another process's breaker may be (see aistack.ai.circuit).
AI_CIRCUIT_REFRESH_SECONDS = 1.0
# One ledger row per model call; only the benchmark turns it off, to measure its cost.
AI_RECORD_USAGE = True
# Test settings turn this on so that no request can reach a paid provider by mistake.
AI_LOOPBACK_ONLY = False
AI_CHAT_MAX_INPUT_CHARS = 32_000
# Monthly spending limits in USD (None: no limit); the admin overrides them per
# workspace or user. Checked before every model call that has a price.
AI_WORKSPACE_MONTHLY_BUDGET_USD = CONFIG.ai_workspace_monthly_budget_usd
AI_USER_MONTHLY_BUDGET_USD = CONFIG.ai_user_monthly_budget_usd
# The answer's length a budget reserves for when a request sets no maximum.
AI_BUDGET_OUTPUT_TOKENS = 1024
# Estimates held this long by a budget nobody touches are taken for those of calls
# that died, and the budget is rebuilt from the ledger.
AI_BUDGET_IDLE_SECONDS = 900
# Per user, over /api/v1/ask, /chat, /search and summary requests ("" for none).
AI_RATE_LIMIT = CONFIG.ai_rate_limit
WRITE_RATE_LIMIT = CONFIG.write_rate_limit

# Metrics: /metrics answers loopback clients, and others that send this bearer token.
METRICS_TOKEN = CONFIG.metrics_token
PROMETHEUS_MULTIPROC_DIR = CONFIG.prometheus_multiproc_dir
USAGE_ROLLUP_INTERVAL_SECONDS = 60.0
# Open event streams per user and web process; one more is answered 429.
EVENT_STREAMS_PER_USER = CONFIG.event_streams_per_user

CELERY_BROKER_URL = Config.celery_broker_url(REDIS_URL, REDIS_SENTINELS)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message that cannot be sent now is sent by the reconciler later: a request never
# waits on a broker that is down (kombu would retry for 0.6 s per send, and connecting
# for 4 s). Workers reconnect by their own policy (CELERY_BROKER_CONNECTION_RETRY).
CELERY_TASK_PUBLISH_RETRY = False
# Two queues, and one list per priority in each, served first to last: a workspace's
# message waits behind those of workspaces with smaller backlogs, and its first jobs go
# to the queue that `aistack worker` keeps processes for (aistack.jobs.services._queue).
CELERY_TASK_QUEUES: dict[str, dict[str, str]] = {"celery": {}, "bulk": {}}
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "max_retries": 0, "priority_steps": list(range(10)),
    # kombu leaves them out over a Unix socket.
    "socket_keepalive": True, "socket_keepalive_options": REDIS_TCP_KEEPALIVE}
if REDIS_SENTINELS:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        master_name=REDIS_SENTINEL_MASTER,
        sentinel_kwargs=REDIS_SENTINEL_OPTIONS)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reconcile-jobs": {
        "task": "aistack.jobs.tasks.reconcile",
        "schedule": float(CONFIG.reconcile_interval_seconds),
    },
    "worker-heartbeat": {
        "task": "aistack.jobs.tasks.heartbeat",
        "schedule": 10.0,
    },
    "merge-postings": {
        "task": "aistack.retrieval.tasks.merge_postings",
        "schedule": 30.0,
    },
    "build-vector-index": {
        "task": "aistack.documents.tasks.build_vector_index",
        "schedule": 30.0,
    },
    # Re-embedding for the embedding model the Models page chose, and the switch to it.
    "embedding-switch": {
        "task": "aistack.retrieval.tasks.embedding_switch",
        "schedule": 30.0,
    },
    "usage-rollup": {
        "task": "aistack.usage.tasks.rollup",
        "schedule": USAGE_ROLLUP_INTERVAL_SECONDS,
    },
}

# One JSON object per line from every process, with the request id (aistack.observability).
LOGGING_CONFIG = "aistack.observability.logging.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "aistack.observability.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
        # The SDKs log every request at INFO; aistack.ai logs one JSON line per attempt instead.
        "httpx2": {"level": "WARNING"},
    },
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
# A refused CSRF check is a friendly page, or the API's JSON error to a script.
CSRF_FAILURE_VIEW = "aistack.web.errors.csrf_failure"
# Every script and style is a file of this site's own: an injected inline script, style
# or event handler does not run, and neither does code built from strings (eval), which
# htmx is told not to use (web/base.html). Pages load nothing from other hosts, post
# forms only here, and are never framed. Images may also be data: URLs, which run no
# code: the API reference's stylesheet (Swagger UI) draws its icons with them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True

# HTTPS=true: served over HTTPS by a proxy in front (deploy/nginx.conf) that terminates
# TLS and sets X-Forwarded-Proto. Off by default, so `aistack serve` works on plain http.
if CONFIG.https:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = CONFIG.ssl_redirect
    # Health probes and Prometheus call the web process directly, over plain http.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = CONFIG.hsts_seconds
    # includeSubDomains reaches only names below this host's own, and preload only states
    # consent to a list an operator must still apply to: safe to send, and what
    # `check --deploy` asks for.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
