"""Prometheus metrics, all named ``aistack_*``, summed over every process at ``/metrics``.

Each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (see the
package docstring); a scrape reads them all, so a Celery worker's job timings show
up on the web process's ``/metrics`` without the worker serving anything itself.
"""

from __future__ import annotations

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# From a cached answer (milliseconds) to a slow model or a long document job (minutes).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)

http_request_seconds = Histogram(
    "aistack_http_request_duration_seconds",
    "Time to answer an HTTP request (a stream: to its first byte), by URL pattern.",
    ["method", "route", "status"], buckets=_SECONDS_BUCKETS,
)
ai_request_seconds = Histogram(
    "aistack_ai_request_duration_seconds",
    "Requests to model providers, one per attempt, by outcome.",
    ["provider", "model", "operation", "outcome"], buckets=_SECONDS_BUCKETS,
)
ai_tokens = Counter(
    "aistack_ai_tokens", "Tokens used by model calls, by feature.", ["feature", "kind"],
)
ai_cost_usd = Counter(
    "aistack_ai_cost_usd", "What model calls cost, in USD, by feature.", ["feature"],
)
ai_budget_denials = Counter(
    "aistack_ai_budget_denials",
    "Model calls refused because a monthly budget was used up.", ["feature", "scope"],
)
rate_limited_requests = Counter(
    "aistack_rate_limited_requests", "Requests refused by a per-user rate limit, by limit.",
    ["limit"],
)
job_seconds = Histogram(
    "aistack_job_duration_seconds", "Runs of background jobs, by task and outcome.",
    ["task", "outcome"], buckets=_SECONDS_BUCKETS,
)
job_failures = Counter(
    "aistack_job_failures", "Jobs parked as failed, by task.", ["task"],
)
cache_requests = Counter(
    "aistack_cache_requests", "Cache reads, by cache, feature and result (hit or miss).",
    ["cache", "feature", "result"],
)


def ai_usage_observe(*, feature: str, input_tokens: int, output_tokens: int,
                     cached_tokens: int, cost_usd: float) -> None:
    """Count the tokens and cost of one model call."""
    for kind, tokens in (("input", input_tokens), ("output", output_tokens),
                         ("cached", cached_tokens)):
        if tokens:
            ai_tokens.labels(feature=feature, kind=kind).inc(tokens)
    if cost_usd:
        ai_cost_usd.labels(feature=feature).inc(cost_usd)


def exposition(*collectors: Collector) -> tuple[bytes, str]:
    """Return every process's metrics in the Prometheus text format, and its content type;
    ``collectors`` add what is read at scrape time."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
        registry, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
