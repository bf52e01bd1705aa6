"""Server-Sent Events of a job's metrics and events, resumable with Last-Event-ID.

Every message id is the cursor `<last metric step>-<last event id>` after that message, so a
client that reconnects with `Last-Event-ID` receives only newer items. The stream polls the
database with a fresh session per poll (no connection is held between polls) and ends with an
`end` message once the job is terminal and everything before that was sent. Each poll also checks
that the API key which opened the stream still works: a stream of a revoked key closes (without
`end`) within one poll interval, and reconnecting with that key gets 401.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool

from service.db import session_factory
from service.errors import ProblemError
from service.models import JobStatus
from service.pagination import as_utc
from service.repositories import job_outputs
from service.repositories import jobs as jobs_repo
from service.repositories import tenants as tenants_repo
from service.schemas import EventPublic, MetricPoint

BATCH = 500
_CURSOR = re.compile(r"^(-1|\d{1,10})-(\d{1,19})$")
_EVENT_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True)
class StreamCursor:
    metric_step: int = -1
    event_id: int = 0

    def encode(self) -> str:
        return f"{self.metric_step}-{self.event_id}"

    @classmethod
    def parse(cls, raw: str | None) -> StreamCursor:
        if not raw:
            return cls()
        match = _CURSOR.match(raw.strip())
        if match is None:
            raise ProblemError(
                400,
                "last_event_id: expected '<metric step>-<event id>'",
                slug="invalid-cursor",
                field="last_event_id",
            )
        return cls(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class _Item:
    created_at: datetime
    name: str
    data: dict[str, Any]
    cursor: StreamCursor


def format_message(*, name: str, data: dict[str, Any], ident: str) -> bytes:
    return f"id: {ident}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True)
class _Poll:
    key_active: bool
    status: str | None
    items: list[_Item]
    full: bool  # a batch was full: more is waiting


def _poll(database_url: str, job_id: uuid.UUID, cursor: StreamCursor, api_key_id: uuid.UUID | None) -> _Poll:
    """The key's state, the job's status, the new items in time order and whether a batch was full.
    Status is read first, so once it is terminal the items read after it include everything the
    worker wrote."""
    with session_factory(database_url)() as session:
        if api_key_id is not None and not tenants_repo.is_key_active(session, api_key_id):
            return _Poll(key_active=False, status=None, items=[], full=False)
        status = jobs_repo.get_job_status(session, job_id)
        metrics = job_outputs.metrics_after(session, job_id, cursor.metric_step, BATCH)
        events, _ = job_outputs.list_events(session, job_id, after=cursor.event_id, limit=BATCH)
    items: list[tuple[datetime, int, Any]] = [(as_utc(m.created_at), 0, m) for m in metrics]
    items += [(as_utc(e.created_at), 1, e) for e in events]
    out = []
    for created_at, is_event, row in sorted(items, key=lambda t: (t[0], t[1])):
        if is_event:
            cursor = replace(cursor, event_id=row.id)
            name = _EVENT_NAME.sub("_", row.kind) or "event"
            out.append(_Item(created_at, name, EventPublic.model_validate(row).model_dump(mode="json"), cursor))
        else:
            cursor = replace(cursor, metric_step=row.step)
            out.append(_Item(created_at, "metric", MetricPoint.model_validate(row).model_dump(mode="json"), cursor))
    return _Poll(key_active=True, status=status, items=out, full=len(metrics) == BATCH or len(events) == BATCH)


async def job_stream(
    *,
    database_url: str,
    job_id: uuid.UUID,
    cursor: StreamCursor,
    poll_seconds: float,
    keepalive_seconds: float,
    is_disconnected: Callable[[], Awaitable[bool]],
    api_key_id: uuid.UUID | None = None,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one job, from `cursor` until the job is terminal (or, with
    `api_key_id`, until that key is revoked)."""
    yield b"retry: 2000\n\n"
    idle = 0.0
    while True:
        poll = await run_in_threadpool(_poll, database_url, job_id, cursor, api_key_id)
        if not poll.key_active:
            return
        status, items, full = poll.status, poll.items, poll.full
        for item in items:
            cursor = item.cursor
            yield format_message(name=item.name, data=item.data, ident=cursor.encode())
        if full:
            continue  # drain the backlog before sleeping
        if status is None or JobStatus(status).is_terminal:
            yield format_message(name="end", data={"job_id": str(job_id), "status": status}, ident=cursor.encode())
            return
        if await is_disconnected():
            return
        idle = 0.0 if items else idle + poll_seconds
        if idle >= keepalive_seconds:
            idle = 0.0
            yield b": keepalive\n\n"
        await asyncio.sleep(poll_seconds)
