"""What each worker pool process runs beside its jobs: the local models, for the web.

A thread started here answers the web's local model requests (see
``aistack.ai.backends.local_service``) with the model the process loads for its jobs.
With ``aistack worker --task-nice N`` the jobs then run at a lower priority than
requests: Linux keeps a niceness per thread, and the threads torch starts for a
calling thread inherit that thread's.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from django.conf import settings

from aistack.ai.backends.local_service import service_start, service_stop

# Set by `aistack worker --task-nice`; pool processes inherit it when they fork.
task_nice = 0


def _local_models_configured() -> bool:
    entries = [*settings.AI_CHAT_MODELS.values(), *settings.AI_EMBEDDING_MODELS.values()]
    return any(entry["BACKEND"].startswith("aistack.ai.backends.local.") for entry in entries)


@worker_process_init.connect
def _pool_process_started(**_: Any) -> None:
    # Started before the niceness changes, so the serving thread keeps the worker's.
    service_start(preload=_local_models_configured())
    if task_nice:
        os.nice(task_nice)  # this thread only: the one that runs the jobs


@worker_process_shutdown.connect
@worker_shutdown.connect
def _pool_process_stopping(**_: Any) -> None:
    service_stop()
