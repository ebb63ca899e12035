"""What the broker holds: messages waiting in each queue, and delivered but unacknowledged."""

from __future__ import annotations

from typing import Any

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from aistack.celery import app

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


def messages_held() -> int:
    """Return every message the broker holds: queued, or with a worker and not yet acked."""
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        unacked = int(channel.client.hlen(channel.unacked_key))
    return sum(queue_depths().values()) + unacked
