"""Usage over REST: per job and per tenant over a time window, written per step by the worker's
JobWriter and counted once per step even when a resumed attempt re-runs steps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service import lifecycle
from service.models import JobStatus
from service.settings import Settings

STEP = {
    "fresh_samples": 32,
    "gen_tokens_per_s": 1000.0,
    "rollout_s": 0.5,
    "learner_tokens_per_s": 3000.0,
    "learner_s": 1.0,
    "step_s": 1.5,
}


def test_job_usage_counts_a_step_rerun_after_a_resume_once(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], settings: Settings
) -> None:
    job = submit(client, alice, {"total_steps": 4})
    writer = claim_as_worker(sessions, job["id"])
    for step in (1, 2, 3):
        writer.record_step(step, STEP, devices=2)
    writer.record_step(3, STEP, devices=2)  # the same step written twice (a retried write)

    # the worker dies, the reaper re-queues the job, and the next attempt resumes from the checkpoint
    # of step 1 and re-runs steps 2 and 3
    future = datetime.now(UTC) + timedelta(minutes=1)
    assert lifecycle.reap_job(sessions, writer.job_id, cutoff=future, settings=settings) is JobStatus.queued
    resumed = claim_as_worker(sessions, job["id"])
    assert resumed.prepare_resume(1) == 2
    for step in (2, 3):
        resumed.record_step(step, STEP, devices=2)

    usage = client.get(f"/v1/jobs/{job['id']}/usage", headers=alice.headers)
    assert usage.status_code == 200, usage.text
    assert usage.json() == {
        "job_id": job["id"],
        "steps": 3,
        "fresh_rollouts": 96,
        "generated_tokens": 1500,
        "trained_tokens": 9000,
        "device_seconds": 9.0,
    }
    assert_problem(client.get(f"/v1/jobs/{job['id']}/usage", headers=bob.headers), 404)


def test_tenant_usage_has_totals_and_a_per_job_breakdown_within_the_window(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session]
) -> None:
    first, second = submit(client, alice), submit(client, alice)
    writer = claim_as_worker(sessions, first["id"])
    writer.record_step(1, STEP)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    writer.record_step(2, STEP)
    claim_as_worker(sessions, second["id"]).record_step(1, {"fresh_samples": 4, "step_s": 0.25})
    bob_job = submit(client, bob)
    claim_as_worker(sessions, bob_job["id"]).record_step(1, STEP)

    everything = client.get("/v1/usage", headers=alice.headers)
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert body["totals"]["fresh_rollouts"] == 68 and body["totals"]["steps"] == 3
    assert body["totals"]["device_seconds"] == 3.25
    by_job = {entry["job_id"]: entry for entry in body["jobs"]}
    assert set(by_job) == {first["id"], second["id"]}  # bob's job is not alice's usage
    assert by_job[first["id"]]["generated_tokens"] == 1000 and by_job[second["id"]]["generated_tokens"] == 0

    later = client.get("/v1/usage", params={"from": between.isoformat()}, headers=alice.headers).json()
    assert later["totals"]["steps"] == 2 and {e["job_id"] for e in later["jobs"]} == {first["id"], second["id"]}
    earlier = client.get("/v1/usage", params={"to": between.isoformat()}, headers=alice.headers).json()
    assert earlier["totals"]["steps"] == 1 and [e["job_id"] for e in earlier["jobs"]] == [first["id"]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = client.get("/v1/usage", params={"from": future}, headers=alice.headers).json()
    assert empty["totals"]["steps"] == 0 and empty["jobs"] == []

    reversed_window = client.get("/v1/usage", params={"from": future, "to": between.isoformat()}, headers=alice.headers)
    assert_problem(reversed_window, 422, "to")
    assert_problem(client.get("/v1/usage", params={"from": "yesterday"}, headers=alice.headers), 422, "from")
    assert client.get("/v1/quotas", headers=alice.headers).json()["usage"]["fresh_rollouts"] == 68
