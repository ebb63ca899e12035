"""Read a server-sent event stream in a thread, as a browser would."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import User

from aistack.accounts.services import api_token_create

Event = tuple[str, str, Any]  # id, name, data


class EventStream:
    """An open ``GET /api/v1/events`` whose events are collected as they arrive."""

    def __init__(self, address: str, token: str, *, query: str = "",
                 last_event_id: str | None = None) -> None:
        self.connection = http.client.HTTPConnection(address, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", f"/api/v1/events{query}", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("content-type") == "text/event-stream"
        self.events: queue.Queue[Event] = queue.Queue()
        self.seen: list[Event] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while line := self.response.readline():
                text = line.decode().rstrip("\n")
                if text and not text.startswith(":"):
                    name, _, value = text.partition(": ")
                    fields[name] = value
                elif not text and "event" in fields:
                    self.events.put((fields.get("id", ""), fields["event"],
                                     json.loads(fields["data"])))
                    fields = {}
                elif not text:
                    fields = {}
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by close()

    def wait_for(self, match: Callable[[Any], bool], *, timeout: float = 30) -> Event:
        """Return the first job event (seen before or arriving) whose data matches."""
        for event in self.seen:
            if match(event[2]):
                return event
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if match(event[2]):
                return event
        raise AssertionError(f"no matching event in {timeout}s; saw {self.seen}")

    def received(self) -> list[Event]:
        """Return every event received so far."""
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return list(self.seen)

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self.connection.close()


def about(document_id: int, status: str, kind: str = "documents.summary") -> Callable[[Any], bool]:
    """Match a job event on one document reaching a status."""
    return lambda data: (data["kind"], data["object_id"], data["status"]) == (
        kind, document_id, status)


@contextmanager
def stream(address: str, user: User, **options: Any) -> Iterator[EventStream]:
    """Open an event stream as ``user`` (with a new token of theirs); close it after."""
    _, token = api_token_create(user=user)
    events = EventStream(address, token, **options)
    try:
        yield events
    finally:
        events.close()
