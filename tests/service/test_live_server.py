"""Against a real uvicorn server: the SSE stream delivers items while the job is still running."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from service_testing import Caller
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.main import create_app
from service.models import JobStatus
from service.settings import Settings


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _read_until(lines: Iterator[str], event: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == f"event: {event}":
            return seen
    raise AssertionError(f"stream ended before {event!r}: {seen}")


def test_stream_is_incremental_over_http(base_url: str, alice: Caller, sessions: sessionmaker[Session]) -> None:
    with httpx.Client(base_url=base_url, headers=alice.headers, timeout=10) as http:
        created = http.post(
            "/v1/jobs", json={"config": {"total_steps": 2}}, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert created.status_code == 202 and created.headers["location"].startswith("/v1/jobs/")
        job_id = uuid.UUID(created.json()["id"])
        writer = claim_as_worker(sessions, job_id, worker_id="w1")
        with http.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            # The job is still running: the queued event arrives anyway.
            assert "event: queued" in _read_until(lines, "queued")
            writer.record_step(1, {"loss": 0.5})
            assert "event: metric" in _read_until(lines, "metric")
            writer.finish(JobStatus.succeeded, step=1, message="done")
            _read_until(lines, "end")
            assert next(lines) == f'data: {{"job_id":"{job_id}","status":"succeeded"}}'
