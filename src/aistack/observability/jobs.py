"""Carry the request id into the jobs a request enqueues, through Celery message headers.

A task started by a request logs (and makes model calls) under that request's id; a
task started by the scheduler gets its own, which the jobs it enqueues inherit. A
retry is published from inside the task, so it keeps the id too.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import before_task_publish, task_postrun, task_prerun

from aistack.observability.logging import request_id, request_id_bind, request_id_forget

REQUEST_ID_HEADER = "aistack_request_id"


@before_task_publish.connect
def _send_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    current = request_id()
    if current and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, current)


@task_prerun.connect
def _bind_request_id(task_id: str, task: Task, **_: Any) -> None:  # type: ignore[type-arg]
    request_id_bind(task.request.get(REQUEST_ID_HEADER) or task_id, task=task.name,
                    task_id=task_id)


@task_postrun.connect
def _forget_request_id(**_: Any) -> None:
    request_id_forget()
