"""What the broker holds: messages waiting in each queue, and delivered but unacknowledged."""

from __future__ import annotations

import base64
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


def messages_taken(*, tasks: Collection[str]) -> set[tuple[str, int]]:
    """Return the ``(task, object id)`` of every message of ``tasks`` that a worker took
    and has not acknowledged yet; raise ``BrokerUnavailable``.

    A message stays taken until its worker acknowledges it, or, if that worker died,
    until the broker's visibility timeout (an hour) puts it back in the queue.
    """
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        raw_messages = channel.client.hvals(channel.unacked_key)
    taken = set()
    for raw in raw_messages:
        job = _job_of(raw)
        if job is not None and job[0] in tasks:
            taken.add(job)
    return taken


def _job_of(raw: bytes) -> tuple[str, int] | None:
    """Return the task and first argument of a stored message, or None if it has neither."""
    try:
        message, *_ = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        object_id = args[0]
        if type(object_id) is not int:
            return None
        return str(message["headers"]["task"]), object_id
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
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
