"""Bodies are refused while they arrive: a sender cannot make the server read past a limit.

Against a real server (uvicorn in a thread), over raw sockets that never stop sending,
with a declared length and chunked. Before the body guard, the server read every byte
before anything checked it, so none of these got an answer until the sender gave up.
"""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

import pytest
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from aistack.request_bodies import ANONYMOUS_BODY_BYTES

pytestmark = pytest.mark.e2e

PIECE = 16 * 1024
# How much a sender may get out after the limit before the answer reaches it: the pieces
# sent while the server decides (a few milliseconds here).
SLACK = 2 * 1024 * 1024
# A sender that was never answered stops here: the test has failed by then.
GIVE_UP = 64 * 1024 * 1024


def send_until_answered(address: str, head: str, *, chunked: bool) -> tuple[int, int, dict]:
    """Send ``head`` and then body pieces, without end, until an answer comes.

    Return the answer's status, how many body bytes were sent before it came, and its
    JSON body.
    """
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        piece = b"x" * PIECE
        framed = f"{PIECE:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
        sent = 0
        while sent < GIVE_UP:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += PIECE
            time.sleep(0.001)
        answer = b""
        sock.settimeout(5)
        # The server closes the connection after its answer: the rest of the body is unread.
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    head_part, _, body = answer.partition(b"\r\n\r\n")
    if _header(head_part, b"transfer-encoding") == b"chunked":
        body = _dechunked(body)
    return status, sent, json.loads(body) if body else {}


def _dechunked(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def _header(head_part: bytes, name: bytes) -> bytes | None:
    for line in head_part.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def head(path: str, *, token: str | None = None, length: int | None = None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(f"Content-Length: {length}" if length is not None
                 else "Transfer-Encoding: chunked")
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "declared"])
def test_a_stranger_is_refused_after_64_kib(asgi_url: str, chunked: bool) -> None:
    # Declared, the length is within the JSON limit but over what a stranger may send.
    length = None if chunked else ANONYMOUS_BODY_BYTES * 16
    status, sent, body = send_until_answered(
        asgi_url, head("/api/v1/documents", length=length), chunked=chunked)

    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    assert sent <= ANONYMOUS_BODY_BYTES + SLACK


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "declared"])
def test_a_signed_in_sender_is_refused_at_the_endpoint_s_limit(
    asgi_url: str, alice: User, settings: Any, chunked: bool,
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    _, token = api_token_create(user=alice)
    length = None if chunked else 1024**3
    status, sent, body = send_until_answered(
        asgi_url, head("/api/v1/documents", token=token, length=length), chunked=chunked)

    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert sent <= 1024 * 1024 + SLACK
    if not chunked:
        assert sent <= SLACK  # the declared length alone decides


def test_a_body_within_its_limits_goes_through(asgi_url: str, alice: User) -> None:
    _, token = api_token_create(user=alice)
    payload = json.dumps({"title": "Long", "content": "word " * 40_000}).encode()
    assert len(payload) > ANONYMOUS_BODY_BYTES
    host, port = asgi_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head("/api/v1/documents", token=token, length=len(payload)).encode()
                     + payload)
        status = int(sock.recv(65536).split(b" ", 2)[1])
    assert status == 201
