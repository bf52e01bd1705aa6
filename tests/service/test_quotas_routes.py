"""Quotas: an admin sets a tenant's limits over REST, the tenant reads them, and submissions past the
queued-jobs limit or a spent training budget are refused with quota-exceeded problems."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.main import create_app
from service.settings import Settings


def _put(client: TestClient, admin: Caller, tenant_id: uuid.UUID, **limits: object) -> dict[str, object]:
    response = client.put(f"/v1/tenants/{tenant_id}/quotas", json=limits, headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_defaults_come_from_settings_and_overrides_replace_them(
    settings: Settings, alice: Caller, admin: Caller
) -> None:
    configured = settings.model_copy(update={"default_max_queued_jobs": 7, "default_max_running_jobs": 2})
    client = TestClient(create_app(configured))
    own = client.get("/v1/quotas", headers=alice.headers)
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["tenant_id"] == str(alice.tenant_id)
    assert body["limits"]["max_queued_jobs"] == 7 and body["limits"]["max_running_jobs"] == 2
    assert body["limits"]["requests_per_second"] is None  # unlimited by default
    assert body["overrides"] == dict.fromkeys(body["limits"])
    assert body["usage"]["generated_tokens"] == 0 and body["queued_jobs"] == 0

    updated = _put(client, admin, alice.tenant_id, max_queued_jobs=3, max_generated_tokens=1000)
    assert updated["limits"]["max_queued_jobs"] == 3 and updated["limits"]["max_running_jobs"] == 2
    assert updated["overrides"]["max_queued_jobs"] == 3 and updated["overrides"]["max_running_jobs"] is None
    assert client.get("/v1/quotas", headers=alice.headers).json()["limits"]["max_generated_tokens"] == 1000
    read = client.get(f"/v1/tenants/{alice.tenant_id}/quotas", headers=admin.headers)
    assert read.status_code == 200 and read.json()["limits"] == updated["limits"]

    # PUT replaces the overrides: a field left out goes back to the default
    again = _put(client, admin, alice.tenant_id, max_running_jobs=5)
    assert again["limits"]["max_queued_jobs"] == 7 and again["limits"]["max_running_jobs"] == 5


def test_only_admins_set_quotas_and_values_are_validated(client: TestClient, alice: Caller, admin: Caller) -> None:
    refused = client.put(f"/v1/tenants/{alice.tenant_id}/quotas", json={"max_queued_jobs": 1}, headers=alice.headers)
    assert_problem(refused, 403)
    assert_problem(client.get(f"/v1/tenants/{alice.tenant_id}/quotas", headers=alice.headers), 403)
    bad = client.put(f"/v1/tenants/{alice.tenant_id}/quotas", json={"max_queued_jobs": -1}, headers=admin.headers)
    assert_problem(bad, 422, "max_queued_jobs")
    unknown = client.put(f"/v1/tenants/{alice.tenant_id}/quotas", json={"max_gpus": 1}, headers=admin.headers)
    assert_problem(unknown, 422, "max_gpus")
    missing = client.put(f"/v1/tenants/{uuid.uuid4()}/quotas", json={}, headers=admin.headers)
    assert_problem(missing, 404, "tenant")


def test_a_submission_past_the_queued_limit_gets_429_and_a_replay_still_succeeds(
    client: TestClient, alice: Caller, bob: Caller, admin: Caller
) -> None:
    _put(client, admin, alice.tenant_id, max_queued_jobs=1)
    first = client.post(
        "/v1/jobs", json={"config": {"total_steps": 2}}, headers=alice.headers | {"Idempotency-Key": "a"}
    )
    assert first.status_code == 202, first.text

    second = client.post("/v1/jobs", json={"config": {"total_steps": 2}}, headers=alice.headers)
    problem = assert_problem(second, 429, "max_queued_jobs")
    assert problem["type"] == "urn:remix:problem:quota-exceeded"
    assert (problem["quota"], problem["limit"], problem["usage"]) == ("max_queued_jobs", 1, 1)
    assert int(second.headers["retry-after"]) >= 1

    replay = client.post(
        "/v1/jobs", json={"config": {"total_steps": 2}}, headers=alice.headers | {"Idempotency-Key": "a"}
    )
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    submit(client, bob)  # another tenant is not affected


def test_a_spent_training_budget_refuses_new_jobs_with_the_usage(
    client: TestClient, alice: Caller, admin: Caller, sessions: sessionmaker[Session]
) -> None:
    job = submit(client, alice, {"total_steps": 3})
    writer = claim_as_worker(sessions, job["id"])
    writer.record_step(1, {"fresh_samples": 8, "gen_tokens_per_s": 600.0, "rollout_s": 1.0, "step_s": 2.0})
    _put(client, admin, alice.tenant_id, max_generated_tokens=1000, max_device_seconds=100)
    submit(client, alice)  # 600 of 1000 tokens used: still allowed

    writer.record_step(2, {"fresh_samples": 8, "gen_tokens_per_s": 500.0, "rollout_s": 1.0, "step_s": 2.0})
    refused = client.post("/v1/jobs", json={"config": {"total_steps": 2}}, headers=alice.headers)
    problem = assert_problem(refused, 403, "max_generated_tokens")
    assert problem["type"] == "urn:remix:problem:quota-exceeded"
    assert (problem["quota"], problem["limit"], problem["usage"]) == ("max_generated_tokens", 1000, 1100)

    _put(client, admin, alice.tenant_id, max_device_seconds=4)
    refused = client.post("/v1/jobs", json={"config": {"total_steps": 2}}, headers=alice.headers)
    problem = assert_problem(refused, 403, "max_device_seconds")
    assert (problem["limit"], problem["usage"]) == (4, 4.0)
