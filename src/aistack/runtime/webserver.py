"""The web process: uvicorn, ending event streams as soon as it starts shutting down."""

from __future__ import annotations

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol


# uvicorn picks its HTTP protocol class at import time and types it as a variable.
class DrainingHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol, whose shutdown also ends the process's event streams."""

    def shutdown(self) -> None:
        """Begin closing the connection, ending the event streams it may be waiting on."""
        # Imported here: worker processes unpickle this class before Django is set up.
        from aistack.streaming import streams_end

        streams_end()
        super().shutdown()


def web_serve(*, host: str, port: int, workers: int, log_level: str,
              graceful_timeout: int) -> None:
    """Serve the ASGI application until SIGTERM or SIGINT, then drain and exit.

    On the signal the server stops accepting connections, ends event streams, and
    gives the requests in flight ``graceful_timeout`` seconds to finish.
    """
    uvicorn.run("aistack.asgi:application", host=host, port=port, workers=workers,
                http=DrainingHTTPProtocol, lifespan="off", log_level=log_level,
                timeout_graceful_shutdown=graceful_timeout)
