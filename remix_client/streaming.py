"""The resumable iterator behind `RemixClient.stream`.

The server names every message with the cursor `<last metric step>-<last event id>`. When the
connection drops (or ends without the final `end` message) the iterator reconnects with that
cursor as `Last-Event-ID`, after the server's `retry:` delay, and the server sends only newer
items. The iterator also drops any item at or below the cursor it already yielded, so even a
server that replays a message cannot make it yield a duplicate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from remix_client.errors import RemixConnectionError, RemixError
from remix_client.models import Event, MetricPoint, StreamEnd, StreamEvent, StreamItem, StreamMetric
from remix_client.sse import ServerSentEvent, iter_sse

if TYPE_CHECKING:
    from remix_client.client import RemixClient

_CURSOR = re.compile(r"^(-1|\d+)-(\d+)$")
MAX_SERVER_DELAY = 30.0


@dataclass
class _Seen:
    """The highest metric step and event id yielded so far."""

    metric_step: int = -1
    event_id: int = 0

    @classmethod
    def from_cursor(cls, cursor: str | None) -> _Seen:
        match = _CURSOR.match(cursor or "")
        return cls(int(match.group(1)), int(match.group(2))) if match else cls()

    def is_new(self, item: StreamItem) -> bool:
        """True (and remembered) the first time an item is offered."""
        if isinstance(item, StreamMetric):
            if item.metric.step <= self.metric_step:
                return False
            self.metric_step = item.metric.step
        elif isinstance(item, StreamEvent):
            if item.event.id <= self.event_id:
                return False
            self.event_id = item.event.id
        return True


def to_item(message: ServerSentEvent) -> StreamItem:
    """The typed stream item of one SSE message."""
    try:
        data: dict[str, Any] = json.loads(message.data)
    except ValueError as exc:
        raise RemixError(f"malformed stream message {message.event!r}: {message.data[:200]!r}") from exc
    ident = message.id or ""
    if message.event == "metric":
        return StreamMetric(id=ident, metric=MetricPoint.model_validate(data))
    if message.event == "end":
        return StreamEnd(id=ident, job_id=data["job_id"], status=data.get("status"))
    return StreamEvent(id=ident, event=Event.model_validate(data))


def resumable_stream(client: RemixClient, job_id: str, last_event_id: str | None) -> Iterator[StreamItem]:
    """Yield the job's stream items until `end`, reconnecting after drops (see module docstring)."""
    cursor, seen = last_event_id, _Seen.from_cursor(last_event_id)
    server_delay: float | None = None
    failures = 0  # consecutive connections that brought nothing new
    while True:
        progressed = False
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": cursor} if cursor else {})
        response = client.send(
            "GET",
            f"/v1/jobs/{job_id}/stream",
            stream=True,
            headers=headers,
            timeout=client.stream_timeout,
        )
        try:
            for message in iter_sse(response.iter_lines()):
                if message.retry_ms is not None:
                    server_delay = min(message.retry_ms / 1000, MAX_SERVER_DELAY)
                if not message.event:
                    continue
                item = to_item(message)
                cursor = message.id or cursor
                if not seen.is_new(item):
                    continue
                progressed = True
                yield item
                if isinstance(item, StreamEnd):
                    return
        except httpx.TransportError:
            pass  # dropped mid-stream: resume below from the last complete message
        finally:
            response.close()
        failures = 0 if progressed else failures + 1
        if failures > client.retry.max_retries:
            raise RemixConnectionError(f"the stream of job {job_id} keeps dropping; giving up")
        time.sleep(server_delay if server_delay is not None else client.retry.delay(failures))
