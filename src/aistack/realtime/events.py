"""Job status changes, published per workspace through Redis and streamed as server-sent events.

Workers (and web processes) publish on ``aistack:events:workspace:<id>`` once a status
change commits; every web process relays what its clients' workspaces receive. Pub/sub
keeps nothing, so a stream starts with the current state read from PostgreSQL: a
client that connects late, or reconnects after missing events, still converges.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.models import Model, Q
from redis.exceptions import RedisError

from aistack.jobs import kinds
from aistack.jobs.kinds import JobKind
from aistack.jobs.models import Job, JobStatus
from aistack.realtime.connections import async_redis_client, redis_client
from aistack.streaming import sse_event

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

    def sse(self) -> str:
        """Format the event for an event stream."""
        return f"id: {self.at}\n" + sse_event("job", asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobEvent:
        """Read an event as published."""
        data: dict[str, Any] = json.loads(raw)
        return cls(workspace=int(data["workspace"]), kind=str(data["kind"]),
                   object_id=int(data["object_id"]), status=JobStatus(data["status"]),
                   error=str(data["error"]), at=int(data["at"]))


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
                # Unordered: a model's default ordering would cost this query a sort.
                workspaces = model._default_manager.filter(pk__in=object_ids).order_by()
                for object_id, workspace_id in workspaces.values_list("pk", "workspace_id"):
                    for kind in relayed:
                        event = JobEvent(workspace=workspace_id, kind=kind.name,
                                         object_id=object_id, status=status, error=error, at=at)
                        pipeline.publish(workspace_channel(workspace_id),
                                         json.dumps(asdict(event)))
            pipeline.execute()
    except RedisError:
        # Clients re-read the state when they reconnect: a lost event costs only latency.
        logger.warning("could not publish %s events", ", ".join(k.name for k in kinds),
                       exc_info=True)


def job_states(*, workspace_ids: Sequence[int], since: float) -> list[JobEvent]:
    """Return the state of every job in the workspaces that runs now or finished after ``since``."""
    # A job's status changes only by entering "pending"/"processing", or by finishing
    # (which sets finished_at): these are all the changes a client may have missed.
    changed = Job.objects.filter(
        Q(status__in=[JobStatus.PENDING, JobStatus.PROCESSING])
        | Q(finished_at__gte=datetime.fromtimestamp(since, tz=UTC))
    )
    at = _now_ms()
    events: list[JobEvent] = []
    for name in changed.values_list("kind", flat=True).distinct().order_by():
        try:
            kind = kinds.get(name)
        except KeyError:
            continue
        if not _relayed(kind) or kind.status_field is None or kind.error_field is None:
            continue
        rows = (
            kind.model()._default_manager
            .filter(workspace_id__in=workspace_ids,
                    pk__in=changed.filter(kind=name).values("object_id"))
            .values_list("pk", "workspace_id", kind.status_field, kind.error_field)
            .order_by("-pk")[:SNAPSHOT_LIMIT]
        )
        events.extend(
            JobEvent(workspace=workspace_id, kind=name, object_id=pk, status=JobStatus(status),
                     error=error, at=at)
            for pk, workspace_id, status, error in rows
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


async def job_event_stream(
    *, workspace_ids: Sequence[int], since: float
) -> AsyncGenerator[str, None]:
    """Yield the current state of the workspaces' jobs, then every change, as SSE text."""
    # Async on purpose: under ASGI, Django buffers a sync iterator whole before sending.
    allowed = set(workspace_ids)
    client = async_redis_client()
    pubsub = client.pubsub()
    try:
        if allowed:
            # Subscribe before reading the state, so that nothing changes unseen in between.
            await pubsub.subscribe(*(workspace_channel(pk) for pk in sorted(allowed)))
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        for event in await sync_to_async(_snapshot)(sorted(allowed), since):
            yield event.sse()
        loop = asyncio.get_running_loop()
        closes_at = loop.time() + MAX_STREAM_SECONDS
        while (left := closes_at - loop.time()) > 0:
            wait = min(KEEPALIVE_SECONDS, left)
            if not allowed:
                await asyncio.sleep(wait)
                message = None
            else:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                # A comment line: keeps proxies from closing an idle stream.
                yield ": keepalive\n\n"
                continue
            event = JobEvent.from_json(message["data"])
            # Channels are per workspace already; checked again, as events must never cross.
            if event.workspace in allowed:
                yield event.sse()
    finally:
        await pubsub.aclose()
        await client.aclose()
