"""The local models, served by the workers to processes that do not load them.

The worker loads all-MiniLM-L6-v2 anyway, to index documents. A web process that
embedded search queries itself would hold a second copy (and its runtime) for a few
milliseconds of work per new query. Instead it pushes the texts onto a Redis list and
waits for the reply (``local.encode_remote``); a thread in each worker pool process
answers them here, with the model that process already has. The thread keeps the
worker's priority while the jobs of that process may run at a lower one (see
``aistack.ai.worker``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

import redis

from aistack.ai.backends.local import (
    EMBEDDING_MODEL,
    EMBEDDING_MODELS,
    REQUESTS_KEY,
    SERVING_KEY,
    SERVING_TTL_SECONDS,
    encode,
    encoders_housekeep,
    model_load,
    vectors_to_text,
)
from aistack.redis.connections import redis_client

logger = logging.getLogger(__name__)

# A reply nobody collects (its caller gave up) goes with this.
_REPLY_TTL_SECONDS = 60
# How often the serving thread looks up from an idle queue to see whether to stop.
_POLL_SECONDS = 1.0


def _answer(client: redis.Redis, raw: bytes | str) -> None:
    request = json.loads(raw)
    if request["expires"] < time.time():
        return
    # Requests from before there were two models name none: they meant the only one then,
    # the full-precision model (a web process not yet upgraded, during an upgrade).
    model = request.get("model", EMBEDDING_MODEL)
    try:
        if model not in EMBEDDING_MODELS:
            raise ValueError(f"no local embedding model is called {model!r}")
        reply = {"vectors": vectors_to_text(encode(request["texts"], model))}
    except Exception as exc:  # the caller gets the reason, and this thread goes on
        logger.exception("local model request failed")
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    with client.pipeline() as pipe:
        pipe.rpush(request["reply"], json.dumps(reply))
        pipe.expire(request["reply"], _REPLY_TTL_SECONDS)
        pipe.execute()


class LocalModelService(threading.Thread):
    """Answers local model requests from other processes until stopped."""

    def __init__(self, *, preload: Sequence[str]) -> None:
        super().__init__(name="local-model-service", daemon=True)
        self._preload = list(preload)
        self._stopping = threading.Event()

    def run(self) -> None:
        """Load the models asked for, then answer requests as they come."""
        for model in self._preload:
            try:
                model_load(model)
            except Exception:  # each request then tries again, and its caller hears why
                logger.exception("local model service: could not load %s", model)
        client = redis_client()
        renewed = 0.0
        while not self._stopping.is_set():
            try:
                # Callers that may run the model themselves ask the workers only while
                # this says one is serving (see local.RUN_AUTO).
                if time.monotonic() - renewed >= _POLL_SECONDS:
                    client.set(SERVING_KEY, 1, ex=SERVING_TTL_SECONDS)
                    renewed = time.monotonic()
                item = client.blpop([REQUESTS_KEY], timeout=_POLL_SECONDS)
                if item is not None:
                    _answer(client, item[1])
                else:
                    # Idle a second: the jobs' sessions, idle longer, can go.
                    encoders_housekeep()
            except redis.RedisError as exc:
                # Redis restarting: callers time out and retry; so does this thread.
                logger.warning("local model service: %s", exc)
                self._stopping.wait(_POLL_SECONDS)
            except (ValueError, KeyError, TypeError):
                # Not a request this code sends; whoever sent it gets no reply.
                logger.exception("local model service: malformed request dropped")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the request in hand, if any."""
        self._stopping.set()
        self.join(timeout)


_service: LocalModelService | None = None
_service_lock = threading.Lock()


def service_start(*, preload: Sequence[str]) -> LocalModelService:
    """Start this process's serving thread, once."""
    global _service
    with _service_lock:
        if _service is None or not _service.is_alive():
            _service = LocalModelService(preload=preload)
            _service.start()
        return _service


def service_stop() -> None:
    """Stop this process's serving thread, if it runs."""
    global _service
    with _service_lock:
        if _service is not None:
            _service.stop()
            _service = None
