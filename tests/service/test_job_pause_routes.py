"""POST /v1/jobs/{id}/pause and /resume: the state machine, its 409s, tenant isolation, re-dispatch on
resume, and the job.paused webhook event of each pause."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from service_testing import Caller, assert_problem, queued_messages, submit
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service import lifecycle
from service.main import create_app
from service.models import Job, JobAttempt, JobStatus, WebhookEvent
from service.settings import Settings


@pytest.fixture(scope="module")
def open_client(settings: Settings) -> TestClient:
    """An app that accepts the 127.0.0.1 webhook destination the webhook test registers."""
    return TestClient(create_app(settings.model_copy(update={"webhook_allow_private": True})))


def _pause(client: TestClient, caller: Caller, job_id: object) -> object:
    return client.post(f"/v1/jobs/{job_id}/pause", headers=caller.headers)


def _resume(client: TestClient, caller: Caller, job_id: object) -> object:
    return client.post(f"/v1/jobs/{job_id}/resume", headers=caller.headers)


def _kinds(client: TestClient, caller: Caller, job_id: object) -> list[str]:
    events = client.get(f"/v1/jobs/{job_id}/events", headers=caller.headers).json()["data"]
    return [e["kind"] for e in events]


def _messages_for(redis_client: Redis, settings: Settings, job_id: str) -> list[dict]:
    return [m for m in queued_messages(redis_client, settings.task_queue) if m["kwargs"] == {"job_id": job_id}]


def test_a_queued_job_pauses_at_once_and_its_old_message_cannot_claim_it(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    job = submit(client, alice)
    response = _pause(client, alice, job["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "paused" and response.json()["finished_at"] is None
    assert _kinds(client, alice, job["id"]) == ["queued", "paused"]
    # The message sent at creation is still in the broker; the worker it reaches finds nothing to claim.
    assert lifecycle.claim_job(sessions, uuid.UUID(job["id"]), worker_id="late-worker") is None
    again = _pause(client, alice, job["id"])
    assert (again.status_code, again.json()["status"]) == (200, "paused")
    assert _kinds(client, alice, job["id"]) == ["queued", "paused"]  # the repeat changed nothing


def test_a_running_job_is_pausing_until_its_worker_stops_then_paused_and_freed(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    job_id = uuid.UUID(submit(client, alice)["id"])
    writer = claim_as_worker(sessions, job_id, worker_id="w1")
    writer.record_step(1, {"loss": 0.5})

    response = _pause(client, alice, job_id)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pausing"
    assert _pause(client, alice, job_id).status_code == 200  # a repeat is harmless
    writer.heartbeat()  # the worker still holds a pausing job until it stops

    assert writer.pause(step=1, message="paused after step 1") is True
    with sessions() as session:
        row = session.get_one(Job, job_id)
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).one()
    assert (row.status, row.worker_id, row.heartbeat_at, row.current_step) == ("paused", None, None, 1)
    assert (attempt.outcome, attempt.ended_at is not None) == ("paused", True)
    with pytest.raises(lifecycle.LeaseLost):  # the lease is gone: no more heartbeats, no more writes
        writer.heartbeat()
    kinds = _kinds(client, alice, job_id)
    assert kinds.index("pause_requested") < kinds.index("paused")
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["status"] == "paused"


def test_resume_queues_a_paused_job_and_dispatches_it_again(
    client: TestClient, alice: Caller, settings: Settings, redis_client: Redis, sessions: sessionmaker[Session]
) -> None:
    job = submit(client, alice)
    first_task = _messages_for(redis_client, settings, job["id"])
    assert len(first_task) == 1
    assert _pause(client, alice, job["id"]).status_code == 200

    response = _resume(client, alice, job["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    sent = _messages_for(redis_client, settings, job["id"])
    assert len(sent) == 2  # a new task, sent like the creation's
    with sessions() as session:
        task_id = session.get_one(Job, uuid.UUID(job["id"])).celery_task_id
    assert task_id in {m["id"] for m in sent} and task_id != first_task[0]["id"]
    assert _kinds(client, alice, job["id"])[-1] == "resume_requested"

    # Resuming a queued job again is answered as done and sends nothing more.
    again = _resume(client, alice, job["id"])
    assert (again.status_code, again.json()["status"]) == (200, "queued")
    assert len(_messages_for(redis_client, settings, job["id"])) == 2
    # The resumed job is claimed as any queued job; resuming it while it runs changes nothing.
    writer = claim_as_worker(sessions, job["id"], worker_id="w2")
    assert (_resume(client, alice, job["id"]).json()["status"]) == "running"
    assert writer.attempt == 1


def test_resume_of_a_pausing_or_finished_job_is_409_naming_its_status(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    job_id = uuid.UUID(submit(client, alice)["id"])
    writer = claim_as_worker(sessions, job_id, worker_id="w1")
    assert _pause(client, alice, job_id).status_code == 202
    body = assert_problem(_resume(client, alice, job_id), 409, "only a paused job can be resumed")
    assert (body["type"], body["job_status"]) == ("urn:remix:problem:job-not-paused", "pausing")

    writer.pause(step=0, message="paused after step 0")
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers)
    body = assert_problem(_resume(client, alice, job_id), 409, "is cancelled")
    assert body["job_status"] == "cancelled"


def test_pause_of_a_cancelling_or_finished_job_is_409(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    cancelling = uuid.UUID(submit(client, alice)["id"])
    claim_as_worker(sessions, cancelling, worker_id="w1")
    assert client.post(f"/v1/jobs/{cancelling}/cancel", headers=alice.headers).status_code == 202
    body = assert_problem(_pause(client, alice, cancelling), 409, "is cancelling and cannot be paused")
    assert (body["type"], body["job_status"]) == ("urn:remix:problem:job-not-pausable", "cancelling")

    finished = uuid.UUID(submit(client, alice)["id"])
    claim_as_worker(sessions, finished, worker_id="w2").finish(JobStatus.succeeded, step=0, message="done")
    body = assert_problem(_pause(client, alice, finished), 409, "is succeeded and cannot be paused")
    assert body["job_status"] == "succeeded"
    assert client.get(f"/v1/jobs/{finished}", headers=alice.headers).json()["status"] == "succeeded"


def test_cancelling_a_paused_job_cancels_it_and_a_pausing_one_cancels_its_pause(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    paused = submit(client, alice)
    _pause(client, alice, paused["id"])
    response = client.post(f"/v1/jobs/{paused['id']}/cancel", headers=alice.headers)
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    assert _kinds(client, alice, paused["id"])[-1] == "cancelled"

    pausing = uuid.UUID(submit(client, alice)["id"])
    writer = claim_as_worker(sessions, pausing, worker_id="w1")
    _pause(client, alice, pausing)
    response = client.post(f"/v1/jobs/{pausing}/cancel", headers=alice.headers)
    assert (response.status_code, response.json()["status"]) == (202, "cancelling")
    # The worker, stopped for the pause, finds the job cancelled meanwhile: no pause, a cancellation.
    assert writer.pause(step=0, message="paused after step 0") is False
    writer.finish(JobStatus.cancelled, step=0, message="cancelled after step 0")
    assert client.get(f"/v1/jobs/{pausing}", headers=alice.headers).json()["status"] == "cancelled"


def test_another_tenants_job_cannot_be_paused_or_resumed(client: TestClient, alice: Caller, bob: Caller) -> None:
    job = submit(client, alice)
    assert_problem(_pause(client, bob, job["id"]), 404, "not found")
    assert_problem(_resume(client, bob, job["id"]), 404, "not found")
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()["status"] == "queued"
    assert_problem(_pause(client, alice, uuid.uuid4()), 404, "not found")


def test_paused_jobs_are_listed_by_status(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice)
    _pause(client, alice, job["id"])
    listed = client.get("/v1/jobs", params={"status": "paused", "limit": 100}, headers=alice.headers).json()
    assert job["id"] in [j["id"] for j in listed["data"]]
    assert all(j["status"] == "paused" for j in listed["data"])


def test_each_pause_records_one_job_paused_webhook_event(
    open_client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    registered = open_client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["job.paused"]}, headers=alice.headers
    )
    assert registered.status_code == 201, registered.text
    job_id = uuid.UUID(submit(open_client, alice)["id"])

    _pause(open_client, alice, job_id)  # queued -> paused
    _pause(open_client, alice, job_id)  # a repeat is no new pause
    _resume(open_client, alice, job_id)
    _pause(open_client, alice, job_id)  # queued -> paused again, before any worker claimed it
    _resume(open_client, alice, job_id)
    writer = claim_as_worker(sessions, job_id, worker_id="w1")
    _pause(open_client, alice, job_id)  # running -> pausing: not paused yet
    writer.pause(step=0, message="paused after step 0")

    with sessions() as session:
        events = session.scalars(
            select(WebhookEvent).where(WebhookEvent.tenant_id == alice.tenant_id).order_by(WebhookEvent.created_at)
        ).all()
    paused = [e for e in events if e.payload["data"]["id"] == str(job_id)]
    assert [e.type for e in paused] == ["job.paused"] * 3
    assert len({e.dedupe_key for e in paused}) == 3
    assert all(e.payload["data"]["status"] == "paused" for e in paused)
