"""One workspace's backlog must not hold up another's work."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User

from aistack.celery import app as celery_app
from aistack.documents.indexing import DOCUMENT_INDEX
from aistack.documents.services import document_create
from aistack.jobs.services import BULK_QUEUE, INTERACTIVE_QUEUE


def delivery_order(*queues: str) -> list[tuple[str, str, int]]:
    """Return the queued messages' (queue, task, object id) in the order a worker
    consuming ``queues`` receives them."""
    order = []
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        for priority in channel.priority_steps:
            for queue in queues:
                # Messages are pushed on the left and taken from the right.
                for raw in reversed(channel.client.lrange(channel._q_for_pri(queue, priority),
                                                          0, -1)):
                    headers = json.loads(raw)["headers"]
                    order.append((queue, headers["task"], int(headers["argsrepr"].strip("[]"))))
    return order


def test_the_app_declares_both_queues() -> None:
    assert set(celery_app.amqp.queues) == {INTERACTIVE_QUEUE, BULK_QUEUE}


def test_a_small_workspace_goes_ahead_of_a_big_backlog(
    alice: User, bob: User, clean_redis: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    for n in range(40):
        with django_capture_on_commit_callbacks(execute=True):
            document_create(workspace=alice.personal_workspace, title=f"Bulk {n}",
                            content="Words.", author=alice)
    with django_capture_on_commit_callbacks(execute=True):
        small = document_create(workspace=bob.personal_workspace, title="One page",
                                content="A page.", author=bob)

    order = delivery_order(INTERACTIVE_QUEUE, BULK_QUEUE)
    assert len(order) == 82
    small_index = (INTERACTIVE_QUEUE, DOCUMENT_INDEX.task_name, small.pk)
    # First in, first out, it would be the 81st; only the flood's first document (sent
    # while its backlog was as small as this one's) goes ahead of it.
    assert order.index(small_index) <= 3
    # The flood's first jobs are interactive too; past a few, they are bulk.
    interactive = delivery_order(INTERACTIVE_QUEUE)
    assert small_index in interactive
    assert 2 <= len(interactive) - 2 <= 6
    # Within the flood, messages keep their order.
    flood_index = [object_id for _, task, object_id in order
                   if task == DOCUMENT_INDEX.task_name and object_id != small.pk]
    assert flood_index == sorted(flood_index)
