"""What each worker pool process runs beside its jobs: the local models, for the web.

A thread started here answers the web's local model requests (see
``aistack.ai.backends.local_service``) with the model the process loads for its jobs.
With ``aistack worker --task-nice N`` the jobs then run at a lower priority than
requests, and with ``--task-idle`` only on CPU time nothing else wants (Linux's
``SCHED_IDLE``): Linux keeps a priority per thread, and the threads torch starts for a
calling thread inherit that thread's (ONNX Runtime's get a session per priority, see
``aistack.ai.backends.minilm_onnx``).
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from django.conf import settings

from aistack.ai.backends.local import EMBEDDING_MODEL_INT8, EMBEDDING_MODELS
from aistack.ai.backends.local_service import service_start, service_stop

# The tokenizer's own thread pool would take the priority of the first thread to use it
# (often a job's, at idle), and hold up the thread answering the web behind it: each
# thread tokenizes by itself instead, which is a few percent of an embedding's time.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# Set by `aistack worker --task-nice` and `--task-idle`; pool processes inherit them.
task_nice = 0
task_idle = False


def _local_models_configured() -> list[str]:
    """Return the local embedding models this worker's jobs will use (to load ahead)."""
    wanted = {entry["MODEL"] for entry in settings.AI_EMBEDDING_MODELS.values()
              if entry["BACKEND"] == "aistack.ai.backends.local.EmbeddingModel"}
    if any(entry["BACKEND"] == "aistack.ai.backends.local.ChatModel"
           for entry in settings.AI_CHAT_MODELS.values()):
        wanted.add(EMBEDDING_MODEL_INT8)  # what the extractive model quotes with
    return sorted(wanted & set(EMBEDDING_MODELS))


@worker_process_init.connect
def _pool_process_started(**_: Any) -> None:
    # Started before the niceness changes, so the serving thread keeps the worker's.
    service_start(preload=_local_models_configured())
    # This thread only: the one that runs the jobs.
    if task_idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif task_nice:
        os.nice(task_nice)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _pool_process_stopping(**_: Any) -> None:
    service_stop()
