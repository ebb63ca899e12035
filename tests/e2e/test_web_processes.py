"""Several web processes on one port, each on a listening socket of its own (Linux)."""

from __future__ import annotations

import contextlib
import http.client as httpclient
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create
from harness import aistack, free_port, kill_group, wait_for, wait_http_ok
from tests.e2e.test_lifecycle import service_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="Linux only")]

CONNECTIONS = 64


@contextlib.contextmanager
def web_processes(tmp_path: Path, port: int, workers: int = 2,
                  *options: str) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "web.log"
    web = aistack("web", "--port", str(port), "--workers", str(workers),
                  "--graceful-timeout", "2", *options, env=service_env(tmp_path), log=log)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=web, log=log)
        wait_for(lambda: len(serving(web)) == workers, message="every web process to start")
        yield web
    finally:
        if web.poll() is None:
            kill_group(web)


def serving(web: subprocess.Popen[bytes]) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(web.pid).children():
        with contextlib.suppress(psutil.Error):  # one that died and is not reaped yet
            if "--socket-fd" in child.cmdline():
                found.append(child)
    return found


def listening(process: psutil.Process, port: int) -> set[int]:
    """Return the descriptors of ``process``'s sockets listening on ``port``."""
    return {found.fd for found in process.net_connections("tcp")
            if found.status == psutil.CONN_LISTEN and found.laddr.port == port}


def open_connections(port: int) -> list[httpclient.HTTPConnection]:
    """Open CONNECTIONS keep-alive connections, each having answered a request."""
    opened = []
    for _ in range(CONNECTIONS):
        connection = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        opened.append(connection)
    return opened


def test_connections_spread_over_processes_each_on_its_own_socket(tmp_path: Path) -> None:
    port = free_port()
    with web_processes(tmp_path, port) as web:
        processes = serving(web)
        sockets = [listening(process, port) for process in processes]
        assert all(len(found) == 1 for found in sockets)
        assert sockets[0] != sockets[1]  # each process inherited its own

        opened = open_connections(port)
        try:
            ours = {connection.sock.getsockname()[1] for connection in opened}  # type: ignore[union-attr]
            held = [sum(1 for found in process.net_connections("tcp")
                        if found.raddr and found.raddr.port in ours) for process in processes]
        finally:
            for connection in opened:
                connection.close()

    assert sum(held) == CONNECTIONS
    # An even hash split puts fewer than 12 of 64 on one side about once in 10^7 runs.
    assert min(held) >= 12, held


def test_a_crashed_web_process_is_replaced_on_the_same_socket(tmp_path: Path) -> None:
    port = free_port()
    with web_processes(tmp_path, port) as web:
        crashed = serving(web)[0]
        its_socket = crashed.cmdline()[crashed.cmdline().index("--socket-fd") + 1]
        crashed.send_signal(signal.SIGKILL)

        def replaced() -> bool:
            return any(process.pid != crashed.pid
                       and process.cmdline()[-1] == its_socket for process in serving(web))

        wait_for(replaced, timeout=30, message="the crashed web process to be replaced")
        wait_for(lambda: all(listening(process, port) for process in serving(web)),
                 timeout=60, message="the replacement to listen")
        # No connection is refused meanwhile or after: the socket outlived its process.
        for connection in open_connections(port):
            connection.close()


def test_a_port_in_use_is_refused_rather_than_shared(tmp_path: Path) -> None:
    port = free_port()
    with web_processes(tmp_path, port):
        log = tmp_path / "second.log"
        second = aistack("web", "--port", str(port), "--workers", "2",
                         env=service_env(tmp_path), log=log)
        assert second.wait(60) != 0
    assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()


def test_the_access_log_leaves_out_query_strings(tmp_path: Path) -> None:
    port = free_port()
    with web_processes(tmp_path, port):
        for path in ("/api/v1/search?q=payroll+password+hunter2", "/healthz?probe=1"):
            connection = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
        wait_for(lambda: "/api/v1/search?…" in (tmp_path / "web.log").read_text(),
                 message="the search to be logged")
    log = (tmp_path / "web.log").read_text()
    assert "hunter2" not in log and "payroll" not in log
    assert '"GET /healthz?… HTTP/1.1" 200' in log


def test_a_request_that_dawdles_over_its_headers_gets_408_and_is_cut_off(
    tmp_path: Path, alice: User
) -> None:
    port = free_port()
    _, token = api_token_create(user=alice)
    with web_processes(tmp_path, port, 2, "--header-timeout", "2"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            answer = b""
            with contextlib.suppress(OSError):
                for n in range(40):  # a header line every half second, for up to 20 s
                    slow.sendall(f"X-Dawdle-{n}: 1\r\n".encode())
                    time.sleep(0.5)
            with contextlib.suppress(OSError):
                answer = slow.recv(4096)
            cut_after = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert cut_after < 6

        # A request whose headers came in time may then take as long as it needs.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as events:
            events.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n".encode())
            assert events.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(3)
            events.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                assert events.recv(4096) != b""  # not closed (a keepalive may come)
