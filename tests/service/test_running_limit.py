"""max_running_jobs is enforced when a worker claims a job (service/lifecycle claim_job): a job over
its tenant's limit stays queued, untouched, and is claimed once a running job has finished."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from service_testing import Caller, submit
from sqlalchemy.orm import Session, sessionmaker

from service import lifecycle
from service.models import Job, JobAttempt, JobStatus


def test_a_job_past_the_running_limit_stays_queued_until_a_slot_frees(
    client: TestClient, alice: Caller, bob: Caller, admin: Caller, sessions: sessionmaker[Session]
) -> None:
    response = client.put(f"/v1/tenants/{alice.tenant_id}/quotas", json={"max_running_jobs": 1}, headers=admin.headers)
    assert response.status_code == 200, response.text
    first, second = (uuid.UUID(submit(client, alice)["id"]) for _ in range(2))
    claim = lifecycle.claim_job(sessions, first, worker_id="w1")
    assert claim is not None

    with pytest.raises(lifecycle.RunningLimitReached) as held_back:
        lifecycle.claim_job(sessions, second, worker_id="w2")
    assert (held_back.value.limit, held_back.value.running) == (1, 1)
    with sessions() as session:
        job = session.get_one(Job, second)
        assert (job.status, job.attempts) == (JobStatus.queued.value, 0)
        assert session.query(JobAttempt).filter_by(job_id=second).count() == 0

    # another tenant is not held back by alice's limit
    other = uuid.UUID(submit(client, bob)["id"])
    assert lifecycle.claim_job(sessions, other, worker_id="w3") is not None

    writer = lifecycle.JobWriter(sessions, claim.job_id, claim.attempt)
    writer.finish(JobStatus.succeeded, message="done", step=5)
    assert lifecycle.claim_job(sessions, second, worker_id="w2") is not None


def test_the_default_limit_applies_without_an_override(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    first, second = (uuid.UUID(submit(client, alice)["id"]) for _ in range(2))
    assert lifecycle.claim_job(sessions, first, worker_id="w1", default_max_running_jobs=1) is not None
    with pytest.raises(lifecycle.RunningLimitReached):
        lifecycle.claim_job(sessions, second, worker_id="w1", default_max_running_jobs=1)
    assert lifecycle.claim_job(sessions, second, worker_id="w1", default_max_running_jobs=2) is not None
