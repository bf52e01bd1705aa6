"""Per-tenant request rates: a token bucket in Redis shared by every API process; past it, 429
quota-exceeded with Retry-After in seconds."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem

from service.main import create_app
from service.rate_limit import LocalRateLimiter
from service.settings import Settings


def test_requests_past_the_rate_get_429_with_retry_after_across_api_processes(
    client: TestClient, settings: Settings, alice: Caller, bob: Caller, admin: Caller
) -> None:
    set_rate = client.put(
        f"/v1/tenants/{alice.tenant_id}/quotas", json={"requests_per_second": 0.5}, headers=admin.headers
    )
    assert set_rate.status_code == 200, set_rate.text
    other_process = TestClient(create_app(settings))  # its own caches and limiter, the same Redis

    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200  # the bucket holds one request
    refused = other_process.get("/v1/jobs", headers=alice.headers)
    problem = assert_problem(refused, 429, "requests_per_second")
    assert problem["type"] == "urn:remix:problem:quota-exceeded"
    assert (problem["quota"], problem["limit"]) == ("requests_per_second", 0.5)
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # a token every 2 s
    assert_problem(client.get("/v1/quotas", headers=alice.headers), 429)
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200  # per tenant

    time.sleep(2.1)
    assert other_process.get("/v1/jobs", headers=alice.headers).status_code == 200


def test_the_default_rate_applies_and_unauthenticated_requests_are_not_counted(
    settings: Settings, alice: Caller
) -> None:
    limited = TestClient(create_app(settings.model_copy(update={"default_requests_per_second": 3.0})))
    statuses = [limited.get("/v1/jobs", headers=alice.headers).status_code for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    assert limited.get("/healthz").status_code == 200


def test_the_in_process_bucket_refills_at_the_rate() -> None:
    import uuid

    limiter, tenant = LocalRateLimiter(), uuid.uuid4()
    assert [limiter.take(tenant, 10.0, 0.2).allowed for _ in range(3)] == [True, True, False]
    refused = limiter.take(tenant, 10.0, 0.2)
    assert refused.retry_after_seconds == 1  # whole seconds, rounded up
    time.sleep(0.11)
    assert limiter.take(tenant, 10.0, 0.2).allowed
