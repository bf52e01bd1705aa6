"""Retries over real sockets: a scripted HTTP server on 127.0.0.1 answers 503/429 before
succeeding. Retry-After is honoured, job creation keeps one Idempotency-Key across attempts,
and POSTs without an Idempotency-Key are never retried."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from client_testing import ScriptedServer

from remix_client import RateLimited, RemixClient, RemixConnectionError, ServerUnavailable
from remix_client.client import is_retry_safe
from remix_client.retry import RetryPolicy, parse_retry_after

JOB = {
    "id": str(uuid.uuid4()),
    "name": "scripted",
    "status": "queued",
    "base_model": "builtin:tiny-arith",
    "created_at": "2025-01-01T00:00:00Z",
}
PROBLEM_HEADERS = {"Content-Type": "application/problem+json", "Retry-After": "0"}


def unavailable(detail: str = "The database is unavailable; retry later.") -> tuple[int, dict[str, str], Any]:
    return (
        503,
        PROBLEM_HEADERS,
        {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": detail},
    )


def client_for(server: ScriptedServer, **kwargs: Any) -> RemixClient:
    return RemixClient(server.url, "rmx_test_key_0123456789", backoff_base=0.01, **kwargs)


def test_get_is_retried_until_it_succeeds() -> None:
    with (
        ScriptedServer([unavailable(), unavailable(), (200, {}, JOB)]) as server,
        client_for(server) as client,
    ):
        job = client.get_job(JOB["id"])
    assert str(job.id) == JOB["id"]
    assert [(method, path) for method, path, _ in server.requests] == [("GET", f"/v1/jobs/{JOB['id']}")] * 3


def test_create_job_retries_with_one_idempotency_key() -> None:
    with (
        ScriptedServer([unavailable(), unavailable(), (202, {}, JOB)]) as server,
        client_for(server) as client,
    ):
        job = client.create_job({"total_steps": 3})
    assert job.name == "scripted"
    keys = {headers["Idempotency-Key"] for _, _, headers in server.requests}
    assert len(server.requests) == 3 and len(keys) == 1 and uuid.UUID(keys.pop()).version == 4


def test_posts_without_idempotency_key_are_not_retried(tmp_path: Any) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    with ScriptedServer([unavailable("queue down"), (201, {}, {})]) as server, client_for(server) as client:
        with pytest.raises(ServerUnavailable, match="queue down"):
            client.upload_dataset(data)
        with pytest.raises(ServerUnavailable):
            server.script = [unavailable(), (200, {}, JOB)]
            client.cancel_job(JOB["id"])
    assert [method for method, _, _ in server.requests] == ["POST", "POST"]


def test_gives_up_after_max_retries_with_the_problem_detail() -> None:
    with ScriptedServer([unavailable("still down")]) as server, client_for(server, max_retries=2) as client:
        with pytest.raises(ServerUnavailable) as info:
            client.list_jobs_page()
    assert len(server.requests) == 3
    assert (info.value.status, info.value.title, info.value.detail) == (
        503,
        "Service Unavailable",
        "still down",
    )


def test_retry_after_seconds_is_honoured() -> None:
    limited = (
        429,
        {"Retry-After": "1"},
        {"title": "Too Many Requests", "status": 429, "detail": "slow down"},
    )
    with ScriptedServer([limited, (200, {}, JOB)]) as server, client_for(server) as client:
        started = time.monotonic()
        client.get_job(JOB["id"])
        waited = time.monotonic() - started
    assert waited >= 0.9 and len(server.requests) == 2
    with ScriptedServer([limited]) as server, client_for(server, max_retries=0) as client:
        with pytest.raises(RateLimited, match="slow down"):
            client.get_job(JOB["id"])


def test_connection_errors_are_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with RemixClient(f"http://127.0.0.1:{port}", "rmx_x", backoff_base=0.01, max_retries=2) as client:
        with pytest.raises(RemixConnectionError, match=f"127.0.0.1:{port}/v1/jobs"):
            client.list_jobs_page()


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    assert all(0.5 <= policy.delay(0) <= 1.0 for _ in range(50))
    assert all(2.0 <= policy.delay(2) <= 4.0 for _ in range(50))
    assert all(2.5 <= policy.delay(10) <= 5.0 for _ in range(50))
    assert len({policy.delay(3) for _ in range(20)}) > 1  # jittered
    assert policy.delay(3, "2") == 2.0  # the server's Retry-After wins


def test_only_idempotent_requests_are_retry_safe() -> None:
    assert is_retry_safe("GET", None) and is_retry_safe("delete", {})
    assert is_retry_safe("POST", {"idempotency-key": "k"})
    assert not is_retry_safe("POST", None) and not is_retry_safe("POST", {"Accept": "x"})
