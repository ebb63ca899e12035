"""Loopback HTTP servers that speak the OpenAI and Anthropic wire protocols.

The official SDKs are pointed at these, so every test goes through the real SDK
code: request building, response parsing, streaming decoders and error classes.
Each response is queued as raw status, headers and body bytes, exactly as sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import QuietHandler, loopback_server


@dataclass
class Canned:
    """One HTTP response, sent exactly as given."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Sent one at a time, without a length: a stream. `drop` closes the connection
    # after them, with no proper end: a stream that breaks half-way.
    chunks: list[bytes] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class VendorServer:
    """A threaded HTTP server on 127.0.0.1 answering with queued responses, in order."""

    def __init__(self) -> None:
        self.queue: deque[Canned] = deque()
        self.received: list[Received] = []
        # Answers to GET by path, sent every time (Ollama's model list, say).
        self.pages: dict[str, Canned] = {}
        # Answers POSTs when nothing is queued, from the path and the request's body.
        self.answer: Callable[[str, Any], Canned] | None = None
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.received.append(Received(
                    method="GET", path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()}, body=None))
                self._send(server.pages.get(self.path, Canned(status=404, body=b"not found")))

            def do_POST(self) -> None:
                raw = self.read_body()
                server.received.append(Received(
                    method="POST", path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                ))
                body = server.received[-1].body
                if server.queue:
                    canned = server.queue.popleft()
                elif server.answer is not None:
                    canned = server.answer(self.path, body)
                else:
                    canned = Canned(status=418,
                                    body=b'{"error": {"message": "no response queued"}}')
                # The client may give up first (a timeout test): nothing left to do then.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(canned)

            def _send(self, canned: Canned) -> None:
                time.sleep(canned.delay)
                self.send_response(canned.status)
                for name, value in canned.headers.items():
                    self.send_header(name, value)
                if canned.chunks is None:
                    self.send_header("content-length", str(len(canned.body)))
                    self.end_headers()
                    self.wfile.write(canned.body)
                    return
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                for chunk in canned.chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(canned.chunk_delay)
                if not canned.drop:
                    # Without this terminator the body is cut short: a broken stream.
                    self.wfile.write(b"0\r\n\r\n")

        self._server = loopback_server(Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def push(self, *responses: Canned) -> None:
        self.queue.extend(responses)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json(status: int, body: dict[str, Any], headers: dict[str, str]) -> Canned:
    return Canned(status=status, headers={"content-type": "application/json", **headers},
                  body=json.dumps(body).encode())


def _sse_data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _sse_event(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


# --- OpenAI (and every OpenAI-compatible server) -------------------------------------


def openai_chat(text: str, *, input_tokens: int = 12, output_tokens: int = 5,
                cached_tokens: int = 0, request_id: str = "req_openai_1") -> Canned:
    return _json(200, {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4.1-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached_tokens}},
    }, {"x-request-id": request_id})


def openai_stream(pieces: list[str], *, input_tokens: int = 12, output_tokens: int = 5,
                  request_id: str = "req_openai_stream", chunk_delay: float = 0.0,
                  drop_after: int | None = None) -> Canned:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "gpt-4.1-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [_sse_data(chunk({"role": "assistant", "content": ""}))]
    events += [_sse_data(chunk({"content": piece})) for piece in pieces]
    if drop_after is not None:
        return Canned(headers={"content-type": "text/event-stream", "x-request-id": request_id},
                      chunks=events[: drop_after + 1], chunk_delay=chunk_delay, drop=True)
    events.append(_sse_data(chunk({}, "stop")))
    # stream_options.include_usage: a last chunk with no choices and the usage.
    events.append(_sse_data({
        "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4.1-mini", "choices": [],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens},
    }))
    events.append(b"data: [DONE]\n\n")
    return Canned(headers={"content-type": "text/event-stream", "x-request-id": request_id},
                  chunks=events, chunk_delay=chunk_delay)


def openai_embeddings(vectors: list[list[float]], *, input_tokens: int = 8,
                      request_id: str = "req_openai_embed") -> Canned:
    return _json(200, {
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": i, "embedding": vector}
                 for i, vector in enumerate(vectors)],
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }, {"x-request-id": request_id})


def openai_error(status: int, *, message: str = "failed", kind: str = "server_error",
                 headers: dict[str, str] | None = None,
                 request_id: str = "req_openai_error") -> Canned:
    return _json(status, {"error": {"message": message, "type": kind, "param": None,
                                    "code": None}},
                 {"x-request-id": request_id, **(headers or {})})


# --- Anthropic -------------------------------------------------------------------------


def anthropic_message(text: str, *, input_tokens: int = 20, output_tokens: int = 6,
                      cache_read: int = 0, request_id: str = "req_anthropic_1") -> Canned:
    return _json(200, {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 0},
    }, {"request-id": request_id})


def anthropic_stream(pieces: list[str], *, input_tokens: int = 20, output_tokens: int = 6,
                     request_id: str = "req_anthropic_stream", chunk_delay: float = 0.0,
                     error_after: int | None = None) -> Canned:
    events = [
        _sse_event("message_start", {"type": "message_start", "message": {
            "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
        _sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
        _sse_event("ping", {"type": "ping"}),
    ]
    for n, piece in enumerate(pieces):
        if error_after is not None and n == error_after:
            # Anthropic reports overload inside a 200 stream, as an `error` event.
            events.append(_sse_event("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}}))
            break
        events.append(_sse_event("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": piece}}))
    else:
        events += [
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse_event("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": "end_turn",
                                                   "stop_sequence": None},
                                         "usage": {"output_tokens": output_tokens}}),
            _sse_event("message_stop", {"type": "message_stop"}),
        ]
    return Canned(headers={"content-type": "text/event-stream", "request-id": request_id},
                  chunks=events, chunk_delay=chunk_delay)


def anthropic_error(status: int, *, kind: str = "api_error", message: str = "failed",
                    headers: dict[str, str] | None = None,
                    request_id: str = "req_anthropic_error") -> Canned:
    return _json(status, {"type": "error", "error": {"type": kind, "message": message}},
                 {"request-id": request_id, **(headers or {})})


def words_embedded(width: int = 16) -> Callable[[str, Any], Canned]:
    """Answer OpenAI embedding requests like a model would: each text's vector is made of
    its words (hashed into ``width`` dimensions), so texts sharing words lie close."""

    def vector(text: str) -> list[float]:
        values = [0.0] * width
        for word in re.findall(r"[a-z]+", text.lower()):
            values[int(hashlib.sha256(word.encode()).hexdigest(), 16) % width] += 1.0
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [v / norm for v in values]

    def answer(path: str, body: Any) -> Canned:
        if not path.endswith("/embeddings"):
            return Canned(status=404, body=b'{"error": {"message": "not found"}}')
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return openai_embeddings([vector(text) for text in texts])

    return answer

