"""/v1/jobs/{id}/stream: live metrics and events as Server-Sent Events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import CurrentTenant, SessionDep, SettingsDep
from service.api.routes.jobs import PROBLEM, owned_job
from service.sse import StreamCursor, job_stream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "SSE stream"},
        400: PROBLEM,
        404: PROBLEM,
    },
)
def stream_job(
    *,
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: CurrentTenant,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(description="Resume cursor when headers cannot be set.")] = None,
) -> StreamingResponse:
    """Stream `metric` and lifecycle events (named by kind), ending with `end` when the job is terminal."""
    job = owned_job(session, caller, job_id)
    cursor = StreamCursor.parse(last_event_id_header or last_event_id)
    session.close()  # release the connection: each poll opens its own session
    body = job_stream(
        database_url=settings.database_url,
        job_id=job.id,
        cursor=cursor,
        poll_seconds=settings.sse_poll_seconds,
        keepalive_seconds=settings.sse_keepalive_seconds,
        is_disconnected=request.is_disconnected,
        api_key_id=caller.api_key_id,  # a revoked key's stream closes at the next poll
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
