"""What the broker holds: messages waiting in each queue, and delivered but unacknowledged."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from typing import Any

from kombu.exceptions import KombuError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from aistack.celery import app

logger = logging.getLogger(__name__)

BrokerUnavailable = (KombuError, RedisError, OSError)


def queue_depths() -> dict[str, int]:
    """Return the messages waiting in each Celery queue; raise ``BrokerUnavailable``."""
    depths = {}
    with app.connection_for_read() as connection:
        # The broker's channel (Redis here) is richer than kombu's declared type.
        channel: Any = connection.default_channel
        for name in sorted(app.amqp.queues):
            # A queue nobody has used yet does not exist in Redis: it is empty.
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except connection.channel_errors:
                depths[name] = 0
    return depths


def messages_held(*, tasks: Collection[str]) -> int:
    """Return the messages the broker holds: all that are queued, and those of ``tasks``
    that a worker took and has not acknowledged yet.

    Taken messages are told apart by task, because a task asking this (the reconciler)
    holds its own message unacknowledged meanwhile; the few queued messages of other
    tasks are counted, which can only delay a re-send until they are consumed.
    """
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        taken = channel.client.hvals(channel.unacked_key)
    unacked = sum(1 for raw in taken if _task_of(raw) in tasks)
    return sum(queue_depths().values()) + unacked


def _task_of(raw: bytes) -> str | None:
    try:
        message, *_ = json.loads(raw)
        return str(message["headers"]["task"])
    except (ValueError, KeyError, TypeError):
        return None


class QueueDepthCollector(Collector):
    """Read the length of each Celery queue from the broker at scrape time."""

    def collect(self) -> Iterable[Metric]:
        """Yield ``aistack_queue_depth`` with one sample per queue."""
        gauge = GaugeMetricFamily("aistack_queue_depth",
                                  "Jobs waiting in each Celery queue.", labels=["queue"])
        try:
            depths = queue_depths()
        except BrokerUnavailable as exc:
            # A scrape still reports everything else while the broker is down.
            logger.warning("queue depth unavailable: %s", exc)
            return
        for name, depth in depths.items():
            gauge.add_metric([name], depth)
        yield gauge
