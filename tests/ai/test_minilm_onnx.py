"""The built-in model in ONNX Runtime, checked against sentence-transformers on torch."""

from __future__ import annotations

import os
import sys
import threading
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from aistack.ai.backends import local, minilm_onnx
from harness import wait_for

TEXTS = [
    "How many vacation days do I get?",
    "Employees receive 25 days of paid leave each year, and unused days carry over.",
    "The server room is kept at 18 degrees Celsius; the door closes by itself.",
    # Over 256 tokens: both cut it there.
    "Quarterly revenue grew by 12 percent, driven by subscriptions in Europe and Asia. " * 20,
    "ok",
]
QUESTIONS = ["What temperature is the server room?", "How did revenue change?",
             "Can unused leave be carried over?"]


@pytest.fixture(scope="module")
def full_precision(tmp_path_factory: pytest.TempPathFactory) -> minilm_onnx.Encoder:
    directory = tmp_path_factory.mktemp("models")
    return minilm_onnx.Encoder(minilm_onnx.model_file(directory, quantized=False), threads=2)


def test_the_graph_computes_what_sentence_transformers_does(
    full_precision: minilm_onnx.Encoder,
) -> None:
    torch_vectors = local.encode(TEXTS, local.EMBEDDING_MODEL)

    vectors = full_precision.encode(TEXTS)

    assert len(full_precision._tokenizer.encode(TEXTS[3]).ids) == minilm_onnx.MAX_TOKENS
    assert np.allclose(vectors, torch_vectors, atol=1e-5)


def test_int8_vectors_point_where_full_precision_ones_do() -> None:
    torch_vectors = local.encode(TEXTS + QUESTIONS, local.EMBEDDING_MODEL)

    vectors = local.encode(TEXTS + QUESTIONS)

    assert vectors.dtype == np.float32 and vectors.shape == (8, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    agreement = (vectors * torch_vectors).sum(axis=1)
    assert agreement.mean() > 0.99
    # A text of one token loses most: "ok" comes out at about 0.97.
    assert agreement.min() > 0.96
    # Each question finds the passage torch finds for it.
    passages, questions = slice(0, 5), slice(5, 8)
    assert list((vectors[questions] @ vectors[passages].T).argmax(axis=1)) == \
        list((torch_vectors[questions] @ torch_vectors[passages].T).argmax(axis=1)) == [2, 3, 1]


def test_order_and_batching_do_not_change_which_vector_a_text_gets() -> None:
    together = local.encode(TEXTS)
    one_by_one = np.vstack([local.encode([text]) for text in TEXTS])
    reversed_order = local.encode(TEXTS[::-1])[::-1]

    # The activations' int8 scale is set per batch, so vectors move a little with company.
    assert (together * one_by_one).sum(axis=1).min() > 0.99
    assert np.allclose(together, reversed_order, atol=1e-6)
    assert local.encode([]).shape == (0, 384)


def test_the_model_is_built_once_and_kept_under_a_name_that_says_what_built_it(
    tmp_path: Path,
) -> None:
    path = minilm_onnx.model_file(tmp_path)
    built = path.stat().st_mtime_ns

    assert minilm_onnx.model_file(tmp_path) == path
    assert path.stat().st_mtime_ns == built
    assert path.name.startswith("all-MiniLM-L6-v2-int8-")
    assert path.stat().st_mode & 0o777 == 0o644
    # Nothing half-written is left beside it.
    assert [found.name for found in tmp_path.iterdir()] == [path.name]
    # int8 matrices, float embeddings: well under the 90 MB of full-precision weights.
    assert path.stat().st_size < 65_000_000


def test_nodes_named_to_keep_stay_at_full_precision_and_the_rest_are_int8(
    tmp_path: Path, full_precision: minilm_onnx.Encoder,
) -> None:
    import onnx

    path = tmp_path / "kept.onnx"
    minilm_onnx.graph_write(path, quantized=True, exclude=["down5_out", "attended0"])

    graph = onnx.load(str(path)).graph
    by_output = {node.output[0]: node for node in graph.node}
    # Kept: the float operators, reading float weights.
    assert by_output["down5_out"].op_type == "MatMul"
    assert by_output["attended0"].op_type == "Attention"
    weights = {tensor.name: tensor.data_type for tensor in graph.initializer}
    assert weights["down5"] == weights["qkv0"] == onnx.TensorProto.FLOAT
    # Every other matrix is int8, one scale per output channel.
    assert "down4" not in weights and "qkv1" not in weights
    assert weights["down4_quantized"] == weights["qkv1_quantized"] == onnx.TensorProto.INT8
    vectors = minilm_onnx.Encoder(path, threads=2).encode(TEXTS)
    assert (vectors * full_precision.encode(TEXTS)).sum(axis=1).min() > 0.96
    with pytest.raises(ValueError, match="no node of the graph is named down6_out"):
        minilm_onnx.graph_write(tmp_path / "typo.onnx", quantized=True, exclude=["down6_out"])
    with pytest.raises(TypeError):
        minilm_onnx.graph_write(tmp_path / "string.onnx", quantized=True, exclude="down5_out")


def test_each_thread_priority_gets_its_own_session() -> None:
    encoder = local.onnx_encoder()
    sessions = []

    def lowered() -> None:
        os.nice(5)  # this thread only, as a worker's job thread
        sessions.append(encoder.session())
        encoder.encode(TEXTS[:2])

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join(60)

    assert sessions and sessions[0] is not encoder.session()
    assert encoder.session() is encoder.session()


def test_a_job_priority_session_unused_for_a_while_is_let_go() -> None:
    encoder = minilm_onnx.Encoder(local.onnx_encoder().path, threads=2)
    encoder.IDLE_SECONDS = 0.5
    first = encoder.session()
    expected = encoder.encode(TEXTS[:2])
    found: list[np.ndarray] = []
    used: list[object] = []
    stop = threading.Event()

    def housekeeping() -> None:  # as the thread answering the web does, every second
        while not stop.wait(0.05):
            encoder.housekeep()

    def job(rounds: int) -> None:
        os.nice(5)  # this thread only, as a worker's job thread
        for _ in range(rounds):
            found.append(encoder.encode(TEXTS[:2]))
            used.append(encoder.session()[0])
            time.sleep(0.2)  # in use more often than IDLE_SECONDS: kept throughout

    keeper = threading.Thread(target=housekeeping)
    keeper.start()
    try:
        thread = threading.Thread(target=job, args=(6,))
        thread.start()
        thread.join(60)
        # One job session throughout, not the first's.
        assert len({id(session) for session in used}) == 1 and used[0] is not first[0]
        wait_for(lambda: len(encoder._sessions) == 1, timeout=10,
                 message="the idle session to be let go")
        # The first session stays, answering as before; the next job starts another.
        assert encoder.session() is first
        thread = threading.Thread(target=job, args=(1,))
        thread.start()
        thread.join(60)
    finally:
        stop.set()
        keeper.join(10)
    assert used[-1] is not used[0]
    assert len(found) == 7 and all(np.allclose(v, expected, atol=1e-6) for v in found)


def test_without_torch_the_full_precision_model_runs_in_onnx_runtime_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An install that searched with torch's vectors keeps searching them once torch is gone."""
    torch_vectors = local.encode(TEXTS, local.EMBEDDING_MODEL)
    model = local.EmbeddingModel(alias="default", model=local.EMBEDDING_MODEL, options={})
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    monkeypatch.setattr(local, "torch_available", cache(local.torch_available.__wrapped__))
    assert not local.torch_available()

    assert model.check() == []
    vectors = np.array(model.embed(TEXTS, timeout=30).vectors)

    assert np.allclose(vectors, torch_vectors, atol=1e-5)
    assert local.onnx_encoder(quantized=False).path.name.startswith("all-MiniLM-L6-v2-fp32-")


def test_a_session_embeds_one_batch_at_a_time() -> None:
    # Its threads use every core: a second call waits its turn rather than share them.
    encoder = local.onnx_encoder()
    _, turn = encoder.session()
    done = threading.Event()

    def call() -> None:
        encoder.encode(TEXTS[:2])
        done.set()

    thread = threading.Thread(target=call)
    with turn:
        thread.start()
        assert not done.wait(1)
    assert done.wait(60)
    thread.join()


MEMORY_AFTER_A_LARGE_CALL = """
import json, sys
from pathlib import Path
import psutil
sys.path.append(sys.argv[2])  # after the standard library, which its http.py would shadow
import minilm_onnx
minilm_onnx.Encoder.IDLE_SECONDS = 0.5
encoder = minilm_onnx.Encoder(minilm_onnx.model_file(Path(sys.argv[1])), threads=2)
encoder.encode(["warm up"])
loaded = psutil.Process().memory_info().rss
words = "revenue grew in Europe and in Asia while costs fell in the Americas".split()
if sys.argv[3] == "many":
    # Of many lengths, as a corpus's are: batches of many shapes.
    encoder.encode([" ".join(words[i % len(words)] for i in range(n, n + 7 * n % 300 + 5))
                    for n in range(200)])
else:
    # One batch as large as batches get, a single document's chunks: given back once
    # the session has been idle a while.
    encoder.encode([" ".join(words[i % len(words)] for i in range(n, n + 240))
                    for n in range(minilm_onnx.BATCH_TOKENS // 256)])
    import time
    grown = psutil.Process().memory_info().rss
    deadline = time.monotonic() + 10
    while psutil.Process().memory_info().rss > grown - 40 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.1)
        encoder.housekeep()
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
print(json.dumps({"loaded": loaded, "now": psutil.Process().memory_info().rss,
                  "peak": int(status["VmHWM"].split()[0]) * 1024}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize("batches", ["many", "one"])
def test_a_large_call_gives_back_the_memory_its_batches_took(batches: str) -> None:
    # In a process of its own: this one's other allocations would blur the figures.
    import json
    import subprocess

    found = subprocess.run(
        [sys.executable, "-P", "-c", MEMORY_AFTER_A_LARGE_CALL, str(settings.LOCAL_MODEL_DIR),
         str(Path(minilm_onnx.__file__).parent), batches],
        capture_output=True, text=True, check=True, timeout=300)
    figures = json.loads(found.stdout)

    megabyte = 2**20
    assert figures["peak"] - figures["loaded"] > 60 * megabyte, figures  # the batches took it
    assert figures["now"] - figures["loaded"] < 15 * megabyte, figures  # and gave it back
