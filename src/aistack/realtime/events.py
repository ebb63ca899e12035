"""Job status changes, published per workspace through Redis and streamed as server-sent events.

Workers (and web processes) publish on ``aistack:events:workspace:<id>`` once a status
change commits. Each web process holds one subscription to every workspace's channel
(``EventHub``) and hands each event to its own streams of that workspace, so a
thousand open streams cost one Redis connection, not a thousand. Pub/sub keeps
nothing, so a stream starts with the current state read from PostgreSQL: a client
that connects late, or reconnects after missing events, still converges; and when
the subscription breaks, every stream of the process ends and its client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.models import Model
from redis.exceptions import RedisError

from aistack.jobs.kinds import JobKind, JobStatus
from aistack.jobs.selectors import jobs_changed_since
from aistack.redis.connections import async_redis_client, redis_client
from aistack.streaming import shutdown_event, sse_event

logger = logging.getLogger(__name__)

# A client that sends no cursor gets what finished this long ago, besides what is running.
DEFAULT_REPLAY_SECONDS = 15 * 60
# Cursors come from other machines' clocks: replaying a little too much is harmless.
CLOCK_SKEW_SECONDS = 5.0
SNAPSHOT_LIMIT = 1000
KEEPALIVE_SECONDS = 15.0
# Streams end after this long and the browser reconnects (from its last event id), so a
# client removed from a workspace stops hearing about it without a check per event.
MAX_STREAM_SECONDS = 300.0
RECONNECT_MILLISECONDS = 2000
# Events a stream may have waiting before it is deemed stuck and ended (its client
# reconnects and replays from its last event id).
STREAM_BACKLOG = 1000
# How long a new stream waits for the process's subscription when there is none yet.
SUBSCRIBE_TIMEOUT_SECONDS = 1.0
_CHANNEL_PATTERN = "aistack:events:workspace:*"
HEALTH_CHECK_SECONDS = 30


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """The state a job reached, as clients see it."""

    workspace: int
    kind: str
    object_id: int
    status: JobStatus
    error: str
    # Milliseconds since the epoch: the event's id, which a reconnecting client sends back.
    at: int
    # The object's name as the state was reached (``JobKind.title_field``), if it has one.
    title: str | None

    @cached_property
    def sse(self) -> str:
        """The event formatted for an event stream: once, for every stream it goes to."""
        return f"id: {self.at}\n" + sse_event("job", asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobEvent:
        """Read an event as published."""
        data: dict[str, Any] = json.loads(raw)
        # Absent from what a process of the previous release publishes.
        title = data.get("title")
        return cls(workspace=int(data["workspace"]), kind=str(data["kind"]),
                   object_id=int(data["object_id"]), status=JobStatus(data["status"]),
                   error=str(data["error"]), at=int(data["at"]),
                   title=None if title is None else str(title))


def workspace_channel(workspace_id: int) -> str:
    """Return the pub/sub channel of a workspace's events."""
    return f"aistack:events:workspace:{workspace_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _relayed(kind: JobKind) -> bool:
    """Return whether clients hear of this kind: it shows its state on a workspace's object."""
    if kind.status_field is None or kind.error_field is None:
        return False
    try:
        kind.model()._meta.get_field("workspace")
    except FieldDoesNotExist:
        return False
    return True


def job_events_publish(
    *, kinds: Sequence[JobKind], object_ids: Sequence[int], status: JobStatus, error: str,
    **_: Any,
) -> None:
    """Publish a committed status change to the workspaces of the objects it concerns."""
    by_model: dict[type[Model], list[JobKind]] = defaultdict(list)
    for kind in kinds:
        if _relayed(kind):
            by_model[kind.model()].append(kind)
    if not by_model:
        return
    at = _now_ms()
    try:
        with redis_client().pipeline(transaction=False) as pipeline:
            for model, relayed in by_model.items():
                titles = {kind.title_field for kind in relayed if kind.title_field}
                # Unordered: a model's default ordering would cost this query a sort.
                rows = model._default_manager.filter(pk__in=object_ids).order_by()
                for row in rows.values("pk", "workspace_id", *titles):
                    for kind in relayed:
                        event = JobEvent(workspace=row["workspace_id"], kind=kind.name,
                                         object_id=row["pk"], status=status, error=error, at=at,
                                         title=row[kind.title_field] if kind.title_field else None)
                        pipeline.publish(workspace_channel(event.workspace),
                                         json.dumps(asdict(event)))
            pipeline.execute()
    except RedisError:
        # Clients re-read the state when they reconnect: a lost event costs only latency.
        logger.warning("could not publish %s events", ", ".join(k.name for k in kinds),
                       exc_info=True)


def job_states(*, workspace_ids: Sequence[int], since: float) -> list[JobEvent]:
    """Return the state of every job in the workspaces that runs now or finished after ``since``."""
    at = _now_ms()
    events: list[JobEvent] = []
    for kind, object_ids in jobs_changed_since(datetime.fromtimestamp(since, tz=UTC)).items():
        if not _relayed(kind) or kind.status_field is None or kind.error_field is None:
            continue
        title = [kind.title_field] if kind.title_field else []
        rows = (
            kind.model()._default_manager
            .filter(workspace_id__in=workspace_ids, pk__in=object_ids)
            .values_list("pk", "workspace_id", kind.status_field, kind.error_field, *title)
            .order_by("-pk")[:SNAPSHOT_LIMIT]
        )
        events.extend(
            JobEvent(workspace=workspace_id, kind=kind.name, object_id=pk, status=JobStatus(status),
                     error=error, at=at, title=named[0] if named else None)
            for pk, workspace_id, status, error, *named in rows
        )
    return events


def _snapshot(workspace_ids: Sequence[int], since: float) -> list[JobEvent]:
    try:
        return job_states(workspace_ids=workspace_ids, since=since)
    finally:
        # A stream lasts minutes: it must not hold a database connection all that time.
        connection.close()


def replay_since(*, last_event_id: str | None, since: float | None) -> float:
    """Return the epoch second from which a new stream replays finished jobs."""
    now = time.time()
    if last_event_id and last_event_id.isdigit() and len(last_event_id) <= 16:
        requested: float | None = int(last_event_id) / 1000
    else:
        requested = since
    if requested is None or not math.isfinite(requested):
        return now - DEFAULT_REPLAY_SECONDS
    # Clients send what they like: keep it between the epoch and now.
    return min(max(requested, 0.0), now) - CLOCK_SKEW_SECONDS


class _Keepalive:
    """Queued to every stream now and then: it sends a comment line, which keeps proxies
    from closing a quiet stream."""


KEEPALIVE = _Keepalive()
Item = JobEvent | _Keepalive | None  # None: the stream ends


class _Listener:
    """One stream's inbox, filled by the hub: events, keepalives, and None to end it.

    A deque and one future to wake the stream: the lightest inbox that waits without a
    task, as thousands are open at once.
    """

    __slots__ = ("_items", "_waiter", "closes_at", "ended", "workspaces")

    def __init__(self, workspaces: Collection[int], closes_at: float) -> None:
        self.workspaces = frozenset(workspaces)
        self.closes_at = closes_at
        self.ended = False
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: JobEvent | _Keepalive) -> None:
        """Queue ``item``; end the stream instead if its client has fallen too far behind."""
        if self.ended:
            return
        if len(self._items) >= STREAM_BACKLOG:
            self.end()  # events were missed: the client reconnects and catches up
        else:
            self._push(item)

    def end(self) -> None:
        """End the stream once it has sent what is queued."""
        if not self.ended:
            self.ended = True
            self._push(None)

    def _push(self, item: Item) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Item:
        """Return the next item, waiting for one."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class EventHub:
    """This process's one subscription to every workspace's events, fanned out to its streams.

    Each stream only waits on its own queue: one event wakes each stream of its workspace
    once, with no task or timer per stream. A single ticker sends keepalives, closes
    streams that reached ``MAX_STREAM_SECONDS``, and ends them all when the server
    starts shutting down.
    """

    def __init__(self) -> None:
        self._all: set[_Listener] = set()
        self._by_workspace: dict[int, set[_Listener]] = defaultdict(set)
        self._subscribed = asyncio.Event()
        self._relaying: asyncio.Task[None] | None = None
        self._ticking: asyncio.Task[None] | None = None

    async def join(self, workspaces: Collection[int]) -> _Listener:
        """Return a listener of ``workspaces``, once the subscription is in place."""
        loop = asyncio.get_running_loop()
        listener = _Listener(workspaces, loop.time() + MAX_STREAM_SECONDS)
        if shutdown_event().is_set():
            listener.end()
            return listener
        self._all.add(listener)
        for workspace in listener.workspaces:
            self._by_workspace[workspace].add(listener)
        if self._relaying is None or self._relaying.done():
            self._relaying = loop.create_task(self._relay())
        if self._ticking is None or self._ticking.done():
            self._ticking = loop.create_task(self._tick())
        if listener.workspaces:
            try:
                await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT_SECONDS)
            except TimeoutError:
                listener.end()  # no Redis: the stream serves the state, then ends
        return listener

    def leave(self, listener: _Listener) -> None:
        """Stop handing events to ``listener``."""
        self._all.discard(listener)
        for workspace in listener.workspaces:
            listeners = self._by_workspace.get(workspace)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_workspace[workspace]

    def _deliver(self, event: JobEvent) -> None:
        # Channels are per workspace already; checked again, as events must never cross.
        for listener in tuple(self._by_workspace.get(event.workspace, ())):
            listener.put(event)

    def _relay_one(self, raw: bytes) -> None:
        try:
            event = JobEvent.from_json(raw)
        except (ValueError, KeyError, TypeError):
            # A publisher of another version, say: one bad event must not end every stream.
            logger.warning("event dropped, not understood: %r", raw[:200])
            return
        self._deliver(event)

    def _end_all(self) -> None:
        for listener in tuple(self._all):
            listener.end()

    async def _relay(self) -> None:
        """Relay events to the listeners, resubscribing after Redis comes back."""
        while True:
            # Pinged while idle: a connection dropped silently (a failover, a NAT timeout)
            # shows as an error, and the relay subscribes again.
            client = async_redis_client(health_check_interval=HEALTH_CHECK_SECONDS)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(_CHANNEL_PATTERN)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=KEEPALIVE_SECONDS)
                    if message is not None and message["type"] == "pmessage":
                        self._relay_one(message["data"])
            except (RedisError, OSError) as exc:
                logger.warning("event subscription lost, streams end and reconnect: %s", exc)
            finally:
                self._subscribed.clear()
                self._end_all()
                await pubsub.aclose()
                await client.aclose()
            await asyncio.sleep(SUBSCRIBE_TIMEOUT_SECONDS)

    async def _tick(self) -> None:
        """Send keepalives and close old streams; end every stream when shutdown begins."""
        loop = asyncio.get_running_loop()
        stopping = shutdown_event()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), KEEPALIVE_SECONDS)
            now = loop.time()
            for listener in tuple(self._all):
                if stopping.is_set() or now >= listener.closes_at:
                    listener.end()
                else:
                    listener.put(KEEPALIVE)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = (
    weakref.WeakKeyDictionary())


def event_hub() -> EventHub:
    """Return the hub of the running event loop (one per web process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
    return hub


# The event streams open in this process, per user.
_streams_open: Counter[int] = Counter()


def streams_open(user_id: int) -> int:
    """Return how many event streams ``user_id`` has open in this process."""
    return _streams_open[user_id]


async def job_event_stream(
    *, workspace_ids: Sequence[int], since: float, user_id: int
) -> AsyncGenerator[str, None]:
    """Yield the current state of the workspaces' jobs, then every change, as SSE text."""
    # Async on purpose: under ASGI, Django buffers a sync iterator whole before sending.
    allowed = set(workspace_ids)
    _streams_open[user_id] += 1
    try:
        async with contextlib.aclosing(_job_events(allowed, since)) as texts:
            async for text in texts:
                yield text
    finally:
        _streams_open[user_id] -= 1
        if _streams_open[user_id] <= 0:
            del _streams_open[user_id]


async def _job_events(allowed: set[int], since: float) -> AsyncGenerator[str, None]:
    hub = event_hub()
    # Joined before reading the state, so that nothing changes unseen in between.
    listener = await hub.join(allowed)
    try:
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        # On a thread of the shared pool: a stream keeps no thread of its own while it waits.
        for event in await sync_to_async(_snapshot, thread_sensitive=False)(sorted(allowed),
                                                                             since):
            yield event.sse
        while (item := await listener.get()) is not None:
            if isinstance(item, _Keepalive):
                yield ": keepalive\n\n"
            elif item.workspace in allowed:
                yield item.sse
    finally:
        hub.leave(listener)
