"""RemixClient.stream: typed items from the real API's Server-Sent Events, resumed after the
connection is cut mid-stream (Last-Event-ID), without duplicates or gaps."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from client_testing import CuttableProxy, ScriptedServer, add_event, finish, record_steps, start_job
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller

from remix_client import RemixClient, StreamEnd, StreamEvent, StreamItem, StreamMetric
from remix_client.sse import iter_sse


def _take_until_step(items: Any, step: int) -> list[StreamItem]:
    taken = []
    for item in items:
        taken.append(item)
        if isinstance(item, StreamMetric) and item.metric.step == step:
            return taken
    raise AssertionError(f"stream ended before step {step}: {taken}")


def test_stream_resumes_after_a_cut_connection(base_url: str, alice: Caller, sessions: sessionmaker[Session]) -> None:
    proxy = CuttableProxy(base_url)
    try:
        with RemixClient(proxy.url, alice.key, timeout=10) as client:
            job = client.create_job({"total_steps": 6})
            job_id = start_job(sessions, job.id)
            record_steps(sessions, job_id, range(1, 4))
            stream = client.stream(job.id)
            items = _take_until_step(stream, 3)

            record_steps(sessions, job_id, range(4, 5))
            time.sleep(0.2)  # step 4 may be in flight, or already read, when the connection drops
            proxy.cut()
            record_steps(sessions, job_id, range(5, 7))
            add_event(sessions, job_id, "evaluation", 6, "done")
            finish(sessions, job_id)
            items += list(stream)
    finally:
        proxy.close()

    steps = [i.metric.step for i in items if isinstance(i, StreamMetric)]
    assert steps == [1, 2, 3, 4, 5, 6]
    # The worker's claim writes 'started' and its finish the outcome's event.
    assert [i.event.kind for i in items if isinstance(i, StreamEvent)] == [
        "queued",
        "started",
        "evaluation",
        "succeeded",
    ]
    assert isinstance(items[-1], StreamEnd) and items[-1].status == "succeeded" and items[-1].job_id == job_id
    # items: queued, started, step 1, step 2, ...
    assert items[3].metric.metrics["reward_mean"] == 0.2  # type: ignore[union-attr]
    # Each stream request's headers, whichever connection carried it.
    heads = re.findall(rb"GET /v1/jobs/[^ ]+/stream HTTP/1.1\r\n(.*?)\r\n\r\n", b"".join(proxy.request_heads), re.S)
    assert len(heads) >= 2 and b"last-event-id" not in heads[0].lower()
    resumed_from = re.search(rb"last-event-id: (\d+)-(\d+)", heads[1].lower())
    assert resumed_from is not None and int(resumed_from.group(1)) in (3, 4)


def test_stream_starts_after_last_event_id(remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    job = remix.create_job({"total_steps": 4})
    job_id = start_job(sessions, job.id)
    record_steps(sessions, job_id, range(1, 5))
    finish(sessions, job_id)
    first = list(remix.stream(job.id))
    cursor = next(i.id for i in first if isinstance(i, StreamMetric) and i.metric.step == 2)
    rest = list(remix.stream(job.id, last_event_id=cursor))
    assert [i.metric.step for i in rest if isinstance(i, StreamMetric)] == [3, 4]
    # queued and started came before the cursor; only the outcome's event came after it
    assert [i.event.kind for i in rest if isinstance(i, StreamEvent)] == ["succeeded"]
    assert isinstance(rest[-1], StreamEnd)


def _sse(messages: list[tuple[str, str, dict[str, Any]]], retry_ms: int = 10) -> bytes:
    out = f"retry: {retry_ms}\n\n"
    for ident, name, data in messages:
        out += f"id: {ident}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
    return out.encode()


def _metric(step: int) -> tuple[str, str, dict[str, Any]]:
    return (
        f"{step}-1",
        "metric",
        {"step": step, "metrics": {"loss": step}, "created_at": "2025-01-01T00:00:00Z"},
    )


def test_replayed_messages_are_never_yielded_twice() -> None:
    sse_headers = {"Content-Type": "text/event-stream"}
    first = _sse([_metric(1), _metric(2)])  # ends without `end`: the client must reconnect
    end = ("3-1", "end", {"job_id": "6f1c1a52-41a5-4b6a-9df2-6f7f8d0d8b1e", "status": "failed"})
    replaying = _sse([_metric(2), _metric(3), end])  # a server replaying step 2
    with ScriptedServer([(200, sse_headers, first), (200, sse_headers, replaying)]) as server:
        with RemixClient(server.url, "rmx_x") as client:
            items = list(client.stream("6f1c1a52-41a5-4b6a-9df2-6f7f8d0d8b1e"))
    assert [i.metric.step for i in items if isinstance(i, StreamMetric)] == [1, 2, 3]
    assert isinstance(items[-1], StreamEnd) and items[-1].status == "failed"
    assert "Last-Event-ID" not in server.requests[0][2]
    assert server.requests[1][2]["Last-Event-ID"] == "2-1"


def test_sse_parser_follows_the_event_stream_format() -> None:
    lines = [
        "retry: 1500",
        "",
        ": keepalive",
        "id: 1-0",
        "event: metric",
        "data: {",
        "data: }",
        "",
        "data: x",
        "",
    ]
    messages = list(iter_sse(lines + ["id: 9-9", "event: cut", "data: half"]))  # the last one never ends
    assert [(m.event, m.data, m.id, m.retry_ms) for m in messages] == [
        ("", "", None, 1500),
        ("metric", "{\n}", "1-0", None),
        ("message", "x", "1-0", None),
    ]
