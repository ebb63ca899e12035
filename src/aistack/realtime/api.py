"""Events API: a server-sent event stream of job status changes in the caller's workspaces."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router

from aistack.accounts.permissions import workspace_ids_for_read
from aistack.errors import RateLimited
from aistack.realtime.events import job_event_stream, replay_since, streams_open
from aistack.streaming import event_stream_response

router = Router(tags=["events"])
# A browser reconnecting after a refusal waits this long (the stream's own retry is 3 s).
RETRY_SECONDS = 30


@router.get(
    "",
    openapi_extra={"responses": {200: {
        "description": "`text/event-stream` of `job` events: "
                       "`{workspace, kind, object_id, status, error, at, title}`, `title` "
                       "being the object's name now (an upload's changes once its text "
                       "is read).",
        "content": {"text/event-stream": {}},
    }}},
)
def events(request: HttpRequest, since: float | None = None,
           workspace: int | None = None) -> StreamingHttpResponse:
    """Stream job status changes; on connect, the state of running and recently finished jobs.

    ``since`` (epoch seconds) replays jobs finished after it; a reconnecting browser sends
    ``Last-Event-ID`` instead. ``workspace`` narrows the stream to one of your workspaces.
    """
    user = request.user
    assert isinstance(user, User)  # the API authenticates every request
    if streams_open(user.pk) >= settings.EVENT_STREAMS_PER_USER:
        raise RateLimited(f"At most {settings.EVENT_STREAMS_PER_USER} event streams may be "
                          "open at once: close another first.", retry_after=RETRY_SECONDS)
    stream = job_event_stream(
        workspace_ids=workspace_ids_for_read(user=request.user, workspace_id=workspace),
        since=replay_since(last_event_id=request.headers.get("Last-Event-ID"), since=since),
        user_id=user.pk,
    )
    # The process's event hub ends the stream when the server starts shutting down.
    return event_stream_response(stream)
