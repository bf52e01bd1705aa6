"""Idempotency-Key on POST /v1/jobs: replays, conflicting reuse, concurrent requests, failed dispatch."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from redis import Redis
from service_testing import Caller, assert_problem, queued_messages
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.main import create_app
from service.models import Job
from service.settings import Settings


def _jobs_with_key(db: Session, caller: Caller, key: str) -> int:
    query = select(func.count()).select_from(Job).where(Job.tenant_id == caller.tenant_id, Job.idempotency_key == key)
    return int(db.scalar(query) or 0)


def _messages_for(redis_client: Redis, settings: Settings, job_id: str) -> int:
    return sum(m["kwargs"] == {"job_id": job_id} for m in queued_messages(redis_client, settings.task_queue))


def test_same_key_same_body_returns_the_same_job(
    client: TestClient, alice: Caller, db: Session, settings: Settings, redis_client: Redis
) -> None:
    key = str(uuid.uuid4())
    body = {"name": "once", "config": {"total_steps": 4}}
    first = client.post("/v1/jobs", json=body, headers=alice.headers | {"Idempotency-Key": key})
    second = client.post("/v1/jobs", json=body, headers=alice.headers | {"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"]
    assert _jobs_with_key(db, alice, key) == 1
    assert _messages_for(redis_client, settings, first.json()["id"]) == 1


def test_same_key_different_body_is_rejected(client: TestClient, alice: Caller, db: Session) -> None:
    key = str(uuid.uuid4())
    client.post("/v1/jobs", json={"config": {"total_steps": 4}}, headers=alice.headers | {"Idempotency-Key": key})
    response = client.post(
        "/v1/jobs", json={"config": {"total_steps": 5}}, headers=alice.headers | {"Idempotency-Key": key}
    )
    body = assert_problem(response, 422, "Idempotency-Key was already used with a different request body")
    assert body["type"] == "urn:remix:problem:idempotency-key-reused"
    assert _jobs_with_key(db, alice, key) == 1


def test_keys_are_scoped_per_tenant(client: TestClient, alice: Caller, bob: Caller) -> None:
    key = str(uuid.uuid4())
    a = client.post("/v1/jobs", json={"config": {}}, headers=alice.headers | {"Idempotency-Key": key})
    b = client.post("/v1/jobs", json={"config": {}}, headers=bob.headers | {"Idempotency-Key": key})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_concurrent_requests_with_one_key_create_one_job(
    client: TestClient, alice: Caller, db: Session, settings: Settings, redis_client: Redis
) -> None:
    key = str(uuid.uuid4())
    threads = 20
    barrier = threading.Barrier(threads)

    def post(_: int) -> tuple[int, str]:
        barrier.wait()
        response = client.post(
            "/v1/jobs",
            json={"name": "race", "config": {"total_steps": 3}},
            headers=alice.headers | {"Idempotency-Key": key},
        )
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(post, range(threads)))
    assert {status for status, _ in results} == {202}
    assert len({job_id for _, job_id in results}) == 1
    assert _jobs_with_key(db, alice, key) == 1
    assert _messages_for(redis_client, settings, results[0][1]) == 1  # dispatched exactly once


def test_idempotency_key_header_is_validated(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/jobs", json={"config": {}}, headers=alice.headers | {"Idempotency-Key": "k" * 256})
    assert_problem(response, 422, "idempotency-key: String should have at most 255 characters")


def test_broker_outage_keeps_the_job_and_a_retry_dispatches_it(
    settings: Settings, alice: Caller, db: Session, redis_client: Redis
) -> None:
    key = str(uuid.uuid4())
    body = {"config": {"total_steps": 2}}
    down = TestClient(create_app(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})))
    response = down.post("/v1/jobs", json=body, headers=alice.headers | {"Idempotency-Key": key})
    problem = assert_problem(response, 503, "could not be dispatched; retry with the same Idempotency-Key")
    assert response.headers["retry-after"] == "5"
    job = db.scalars(select(Job).where(Job.id == uuid.UUID(problem["job_id"]))).one()
    assert job.status == "queued" and job.celery_task_id is None
    retry = TestClient(create_app(settings)).post(
        "/v1/jobs", json=body, headers=alice.headers | {"Idempotency-Key": key}
    )
    assert retry.status_code == 202 and retry.json()["id"] == problem["job_id"]
    assert _messages_for(redis_client, settings, problem["job_id"]) == 1
