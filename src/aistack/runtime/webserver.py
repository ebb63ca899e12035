"""The web processes: uvicorn, each on its own listening socket, draining on shutdown.

Several web processes accepting from one shared socket split the load unevenly: the
kernel wakes every process waiting on it, and the one that is least busy at that
instant takes the connection, so one process can serve most of the traffic while
another idles. On Linux each web process gets a socket of its own on the same port
(``SO_REUSEPORT``) and the kernel spreads new connections evenly among them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import sys
from typing import Any

import click
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aistack.runtime.supervisor import Child, Supervisor

APPLICATION = "aistack.asgi:application"
# uvicorn's default: connections the kernel queues for a process before it accepts them.
BACKLOG = 2048
# Beyond a drain's own timeout, what a web process gets to exit before it is killed.
EXIT_MARGIN_SECONDS = 5


class QueryStringHidden(logging.Filter):
    """Leave query strings out of the access log: they carry search terms and questions."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, its path cut at the query string."""
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            if isinstance(path, str) and "?" in path:
                record.args = (client, method, path.split("?", 1)[0] + "?…", version, status)
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with query strings hidden from its access log."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["query_string_hidden"] = {"()": QueryStringHidden}
    config["handlers"]["access"]["filters"] = ["query_string_hidden"]
    return config


# What a server answers a client that took too long to send its request's headers.
_HEADERS_TOO_SLOW = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Length: 0\r\n\r\n")


class DrainingHTTPProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, whose shutdown also ends the process's event streams, and
    which gives a request ``headers_timeout`` seconds to send its headers.

    Without that limit a client sending a header line now and then holds its connection
    (and a place among the process's connections) for as long as it likes.
    """

    headers_timeout: float = 10.0
    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._headers_clock_start()

    def on_message_begin(self) -> None:
        """Start the clock for a later request's headers on a kept-alive connection."""
        super().on_message_begin()
        self._headers_clock_start()

    def on_headers_complete(self) -> None:
        """Stop the clock: the headers are in."""
        self._headers_clock_stop()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._headers_clock_stop()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Begin closing the connection, ending the event streams it may be waiting on."""
        # Imported here: uvicorn's worker processes unpickle this class before Django
        # is set up, and the module needs Django's settings.
        from aistack.streaming import streams_end

        streams_end()
        super().shutdown()

    def _headers_clock_start(self) -> None:
        if self._headers_deadline is None:
            self._headers_deadline = self.loop.call_later(self.headers_timeout,
                                                          self._headers_too_slow)

    def _headers_clock_stop(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_HEADERS_TOO_SLOW)
            self.transport.close()


def web_serve(*, host: str, port: int, workers: int, log_level: str, graceful_timeout: int,
              headers_timeout: float = DrainingHTTPProtocol.headers_timeout,
              socket_fd: int | None = None) -> None:
    """Serve the ASGI application until SIGTERM or SIGINT, then drain and exit.

    On the signal the server stops accepting connections, ends event streams, and
    gives the requests in flight ``graceful_timeout`` seconds to finish. A request whose
    headers take longer than ``headers_timeout`` seconds is answered 408. With
    ``socket_fd``, this process serves the listening socket it inherited.
    """
    DrainingHTTPProtocol.headers_timeout = headers_timeout
    options = {"http": DrainingHTTPProtocol, "lifespan": "off", "log_level": log_level,
               "log_config": _log_config(), "timeout_graceful_shutdown": graceful_timeout}
    if socket_fd is not None:
        config = uvicorn.Config(APPLICATION, **options)  # type: ignore[arg-type]
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=socket_fd)])
    elif workers > 1 and sys.platform == "linux":
        _serve_processes(host=host, port=port, workers=workers,
                         graceful_timeout=graceful_timeout, headers_timeout=headers_timeout)
    else:
        uvicorn.run(APPLICATION, host=host, port=port, workers=workers,
                    **options)  # type: ignore[arg-type]


def _bind_probe(host: str, port: int) -> None:
    """Bind a plain socket (no ``SO_REUSEPORT``) to ``host:port`` and let it go; raise
    ``OSError`` if something listens there."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def port_free(host: str, port: int) -> bool:
    """Return whether nothing listens on ``host:port``."""
    try:
        _bind_probe(host, port)
    except OSError:
        return False
    return True


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """Return ``count`` sockets listening on ``host:port``, among which Linux spreads
    new connections; raise ``OSError`` if anything else listens there already."""
    # Bound without SO_REUSEPORT first: another server on the port (another aistack
    # included) then makes this fail, instead of silently sharing its connections.
    _bind_probe(host, port)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    found = []
    for _ in range(count):
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        found.append(sock)
    return found


def _serve_processes(*, host: str, port: int, workers: int, graceful_timeout: int,
                     headers_timeout: float) -> None:
    """Run ``workers`` web processes, each on its own socket, until SIGTERM or SIGINT.

    This process holds the sockets, so connections the kernel queued for a process
    that crashed wait for its replacement, which serves the same socket.
    """
    try:
        sockets = listening_sockets(host, port, workers)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    me = [sys.executable, "-m", "aistack", "web"]
    children = [
        Child(name=f"web {n}", pass_fds=(sock.fileno(),),
              argv=[*me, "--graceful-timeout", str(graceful_timeout),
                    "--header-timeout", str(headers_timeout),
                    "--socket-fd", str(sock.fileno())])
        for n, sock in enumerate(sockets, start=1)
    ]
    click.echo(f"Serving on http://{host}:{port} with {workers} processes")
    Supervisor(children, env=os.environ,
               stop_timeout=graceful_timeout + EXIT_MARGIN_SECONDS).run()
