"""Metrics and events of a job (JSON reads) and their Server-Sent Events stream."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.lifecycle import JobWriter
from service.models import JobStatus
from service.settings import Settings


def _running_job(client: TestClient, caller: Caller, sessions: sessionmaker[Session]) -> JobWriter:
    """A submitted job claimed as the worker claims it (its 'started' event included); its attempt's writer."""
    job_id = uuid.UUID(submit(client, caller)["id"])
    return claim_as_worker(sessions, job_id, worker_id="w1")


def _write_steps(writer: JobWriter, steps: range) -> None:
    for step in steps:
        writer.record_step(step, {"reward_mean": step / 10, "replay_fraction": 0.4})


def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE wire format -> [{'id', 'event', 'data'}] (comments and retry lines skipped)."""
    messages = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":") and ": " in line)
        if "event" in fields:
            messages.append({"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])})
    return messages


def test_metrics_range_and_limit(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    _write_steps(writer, range(10))
    url = f"/v1/jobs/{job_id}/metrics"
    everything = client.get(url, headers=alice.headers).json()
    assert [p["step"] for p in everything["data"]] == list(range(10)) and not everything["has_more"]
    window = client.get(url, params={"from_step": 3, "to_step": 6}, headers=alice.headers).json()
    assert [p["step"] for p in window["data"]] == [3, 4, 5, 6]
    assert window["data"][0]["metrics"] == {"reward_mean": 0.3, "replay_fraction": 0.4}
    limited = client.get(url, params={"from_step": 3, "limit": 2}, headers=alice.headers).json()
    assert [p["step"] for p in limited["data"]] == [3, 4] and limited["has_more"]
    assert_problem(
        client.get(url, params={"from_step": 5, "to_step": 2}, headers=alice.headers),
        422,
        "to_step: must be >= from_step",
    )


def test_metrics_of_a_job_without_steps_in_the_range_are_an_empty_page(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session]
) -> None:
    writer = _running_job(client, alice, sessions)
    url = f"/v1/jobs/{writer.job_id}/metrics"
    assert client.get(url, headers=alice.headers).json() == {"data": [], "has_more": False}
    _write_steps(writer, range(3))
    assert client.get(url, params={"from_step": 5}, headers=alice.headers).json() == {"data": [], "has_more": False}
    assert_problem(client.get(url, headers=bob.headers), 404, f"job {writer.job_id} not found")
    missing = uuid.uuid4()
    assert_problem(client.get(f"/v1/jobs/{missing}/metrics", headers=alice.headers), 404, f"job {missing} not found")


def test_a_retried_step_overwrites_its_metrics(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    _write_steps(writer, range(3))
    writer.record_step(1, {"reward_mean": 0.99})
    data = client.get(f"/v1/jobs/{job_id}/metrics", headers=alice.headers).json()["data"]
    assert [(p["step"], p["metrics"].get("reward_mean")) for p in data] == [(0, 0.0), (1, 0.99), (2, 0.2)]


def test_events_after_cursor(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    writer.add_event("reincarnated", 50, "anchor reset", {"step": 50})
    events = client.get(f"/v1/jobs/{job_id}/events", headers=alice.headers).json()["data"]
    assert [e["kind"] for e in events] == ["queued", "started", "reincarnated"]
    assert events[2]["payload"] == {"step": 50}
    later = client.get(f"/v1/jobs/{job_id}/events", params={"after": events[0]["id"]}, headers=alice.headers).json()
    assert [e["kind"] for e in later["data"]] == ["started", "reincarnated"]


def test_stream_sends_metrics_events_and_end(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    _write_steps(writer, range(1, 4))
    writer.finish(JobStatus.succeeded, step=3, message="done")  # with its 'succeeded' event
    response = client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(response.text)
    assert [m["event"] for m in messages] == [
        "queued",
        "started",
        "metric",
        "metric",
        "metric",
        "succeeded",
        "end",
    ]
    assert [m["data"]["step"] for m in messages if m["event"] == "metric"] == [1, 2, 3]
    assert messages[-1]["data"] == {"job_id": str(job_id), "status": "succeeded"}
    assert len({m["id"] for m in messages[:-1]}) == len(messages) - 1  # every item moves the cursor


def test_stream_resumes_after_last_event_id(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    _write_steps(writer, range(1, 6))
    writer.finish(JobStatus.failed, step=5, error="out of memory", message="out of memory")
    full = parse_sse(client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers).text)
    resume_at = next(m for m in full if m["event"] == "metric" and m["data"]["step"] == 2)["id"]
    resumed = parse_sse(
        client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers | {"Last-Event-ID": resume_at}).text
    )
    assert [(m["event"], m["data"].get("step")) for m in resumed] == [
        ("metric", 3),
        ("metric", 4),
        ("metric", 5),
        ("failed", 5),
        ("end", None),
    ]
    by_query = parse_sse(
        client.get(f"/v1/jobs/{job_id}/stream", params={"last_event_id": resume_at}, headers=alice.headers).text
    )
    assert by_query == resumed
    at_end = parse_sse(
        client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers | {"Last-Event-ID": full[-1]["id"]}).text
    )
    assert [m["event"] for m in at_end] == ["end"]


def test_stream_follows_a_live_job(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id

    def worker() -> None:  # writes while the stream is open, then finishes the job
        for step in range(1, 4):
            time.sleep(0.1)
            writer.record_step(step, {"loss": 1.0 / step})
        writer.finish(JobStatus.succeeded, step=3, message="done")

    thread = threading.Thread(target=worker)
    thread.start()
    messages = parse_sse(client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers).text)
    thread.join()
    assert [m["data"]["step"] for m in messages if m["event"] == "metric"] == [1, 2, 3]
    assert messages[-1]["event"] == "end" and messages[-1]["data"]["status"] == "succeeded"


def test_stream_rejects_a_malformed_cursor(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    job_id = _running_job(client, alice, sessions).job_id
    response = client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers | {"Last-Event-ID": "../x"})
    assert_problem(response, 400, "last_event_id: expected '<metric step>-<event id>'")


def test_stream_sends_keepalives_while_idle(
    settings: Settings, alice: Caller, sessions: sessionmaker[Session], client: TestClient
) -> None:
    from service.main import create_app

    writer = _running_job(client, alice, sessions)
    job_id = writer.job_id
    quick = TestClient(create_app(settings.model_copy(update={"sse_keepalive_seconds": 0.1})))

    def finish_later() -> None:
        time.sleep(0.5)
        writer.finish(JobStatus.succeeded, step=0, message="done")

    thread = threading.Thread(target=finish_later)
    thread.start()
    text = quick.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers).text
    thread.join()
    assert ": keepalive" in text
    assert parse_sse(text)[-1]["event"] == "end"
