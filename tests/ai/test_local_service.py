"""The local models served by a real Celery worker to a process that does not load them."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from aistack.ai.backends import local, local_service
from aistack.ai.backends.local import REQUESTS_KEY, encode_remote
from aistack.ai.backends.local_service import service_stop
from aistack.ai.exceptions import Timeout
from aistack.ai.types import ChatRequest, Message
from aistack.redis.connections import redis_client
from harness import wait_for

TEXTS = ["How many vacation days do I get?",
         "Employees receive 25 days of paid leave each year, and unused days carry over."]
POLICY = ("Employees receive 25 days of paid vacation per year. Unused days carry over until "
          "March. Requests go to your manager two weeks ahead.")
IN_WORKER = {"RUN_IN": local.RUN_IN_WORKER}


@pytest.mark.parametrize("model", local.EMBEDDING_MODELS)
def test_a_worker_embeds_for_a_process_that_asks_it(celery_worker: Any, model: str) -> None:
    here = local.EmbeddingModel(alias="default", model=model, options={})
    there = local.EmbeddingModel(alias="default", model=model, options=IN_WORKER)

    expected = here.embed(TEXTS, timeout=30)
    found = there.embed(TEXTS, timeout=30)

    assert np.array_equal(np.array(found.vectors), np.array(expected.vectors))
    assert found.usage.input_tokens == expected.usage.input_tokens > 10
    assert redis_client().llen(REQUESTS_KEY) == 0


def test_the_extractive_model_answers_the_same_through_a_worker(celery_worker: Any) -> None:
    request = ChatRequest(messages=(Message(role="user", content="How many vacation days?"),),
                          context=(POLICY,))
    here = local.ChatModel(alias="default", model="extractive", options={})
    there = local.ChatModel(alias="default", model="extractive", options=IN_WORKER)

    expected = here.complete(request, timeout=30)
    found = there.complete(request, timeout=30)

    assert found.text == expected.text
    assert "25 days" in found.text
    assert found.usage == expected.usage


def test_without_a_worker_the_call_times_out_and_leaves_nothing_queued(
    clean_redis: None,
) -> None:
    service_stop()
    started = time.monotonic()
    with pytest.raises(Timeout, match="is a worker running"):
        encode_remote(TEXTS, timeout=0.5)

    assert 0.4 < time.monotonic() - started < 3
    # A worker starting later finds no request whose caller has gone.
    assert redis_client().llen(REQUESTS_KEY) == 0


def test_a_malformed_request_does_not_stop_the_service(celery_worker: Any) -> None:
    redis_client().rpush(REQUESTS_KEY, b"not json", b'{"texts": 3}')

    vectors, tokens = encode_remote(TEXTS[:1], timeout=30), local.token_count(TEXTS[:1])

    assert vectors is not None and vectors.shape == (1, 384)
    assert tokens > 3


def vectors_and_tokens(texts: list[str]) -> tuple[Any, int]:
    return local.encode(texts), local.token_count(texts)


def test_threads_encoding_at_once_get_what_each_gets_alone() -> None:
    batches = [[f"{text} ({n})" * (1 + n % 4) for text in TEXTS] for n in range(8)]
    alone = [vectors_and_tokens(batch) for batch in batches]
    together: list[Any] = [None] * len(batches)
    errors: list[BaseException] = []
    start = threading.Barrier(len(batches))

    def encode(n: int) -> None:
        start.wait()
        try:
            # Counting tokens (MiniLM's tokenizer alone) while the model tokenizes.
            local.token_count(batches[n])
            together[n] = vectors_and_tokens(batches[n])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=encode, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    for (vectors, tokens), (expected_vectors, expected_tokens) in zip(together, alone,
                                                                      strict=True):
        assert tokens == expected_tokens
        assert np.allclose(vectors, expected_vectors, atol=1e-6)


def test_a_thread_stalled_while_tokenizing_holds_up_no_other_thread() -> None:
    """A job thread at idle priority can be preempted mid-call for as long as the CPU is
    busy; nothing it holds then may be something a request's thread needs."""
    model = local.sentence_model()  # the full-precision model: torch's tokenizer in Python
    inside, release = threading.Event(), threading.Event()

    def stall_inside_tokenizer() -> None:
        tokenizer = model[0].processor  # this thread's own
        encode_plus = tokenizer._encode_plus

        def stalled(*args: Any, **kwargs: Any) -> Any:
            inside.set()
            release.wait(60)
            return encode_plus(*args, **kwargs)

        tokenizer._encode_plus = stalled
        local.encode(TEXTS, local.EMBEDDING_MODEL)

    stalled_thread = threading.Thread(target=stall_inside_tokenizer)
    stalled_thread.start()
    try:
        assert inside.wait(30)
        served: list[Any] = []
        serving = threading.Thread(
            target=lambda: served.append(local.encode(TEXTS[:1], local.EMBEDDING_MODEL)))
        serving.start()
        serving.join(30)
        assert not serving.is_alive() and len(served) == 1
        assert served[0].shape == (1, 384)
    finally:
        release.set()
        stalled_thread.join(60)


def test_auto_asks_a_serving_worker_and_runs_the_model_itself_when_none_answers(
    celery_worker: Any,
) -> None:
    auto = local.EmbeddingModel(alias="default", model="all-MiniLM-L6-v2-int8",
                                options={"RUN_IN": local.RUN_AUTO})
    here = local.EmbeddingModel(alias="default", model="all-MiniLM-L6-v2-int8", options={})
    expected = np.array(here.embed(TEXTS, timeout=30).vectors)
    wait_for(local.workers_serving, message="the worker to serve the model")
    assert not auto.loads_here()
    assert np.array_equal(np.array(auto.embed(TEXTS, timeout=30).vectors), expected)

    # The worker stops serving, but its key has not expired yet: the request it would
    # have answered times out, and the model runs here instead.
    service_stop()
    assert local.workers_serving()
    started = time.monotonic()
    assert np.array_equal(np.array(auto.embed(TEXTS, timeout=0.5).vectors), expected)
    assert time.monotonic() - started >= 0.5


def test_a_worker_slower_than_a_redis_socket_timeout_still_gets_its_answer_through(
    clean_redis: None,
) -> None:
    """redis-py gives up on a socket silent for 5 s; a worker busy with a long batch takes
    longer than that to take a request, and its caller must wait for it, not fail."""
    service_stop()
    client = redis_client()

    def slow_worker() -> None:
        time.sleep(6)
        [_, raw] = client.blpop([REQUESTS_KEY], timeout=5)
        local_service._answer(client, raw)

    worker = threading.Thread(target=slow_worker)
    worker.start()
    try:
        vectors = encode_remote(TEXTS, timeout=30)
    finally:
        worker.join(30)

    assert np.allclose(vectors, local.encode(TEXTS), atol=1e-6)
