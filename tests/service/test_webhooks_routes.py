"""/v1/webhooks against real Postgres and Redis: registration and its URL policy, tenant isolation,
events recorded with the lifecycle change they report, and deliveries to a real receiver (a local HTTP
server standing in for the tenant's) signed the Standard Webhooks way, retried, logged and redelivered.

Attempts run through `service.webhooks.delivery.deliver`, the body of the worker's
`worker.deliver_webhook` task; tests/worker/test_webhook_worker.py runs them through a real worker.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from service_testing import Caller, assert_problem, queued_messages, submit
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from testing_support import WebhookReceiver, claim_as_worker

from service.lifecycle import LeaseLost
from service.main import create_app
from service.models import JobStatus, WebhookDelivery
from service.queue import MAINTENANCE_QUEUE
from service.settings import Settings
from service.webhooks.delivery import RESPONSE_SNIPPET_CHARS, deliver


@pytest.fixture(scope="module")
def open_settings(settings: Settings) -> Settings:
    """The session's settings with private destinations allowed (the receiver is on 127.0.0.1) and no
    waiting between retries."""
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_retry_schedule": "0,0,0,0"})


@pytest.fixture(scope="module")
def open_client(open_settings: Settings) -> TestClient:
    return TestClient(create_app(open_settings))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def _register(client: TestClient, caller: Caller, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _deliveries(client: TestClient, caller: Caller, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=caller.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _deliver_until_done(sessions: sessionmaker[Session], settings: Settings, delivery_id: str) -> list[str]:
    """Run attempts as the worker's task and its retries would, until the delivery is no longer pending."""
    statuses = []
    for _ in range(settings.webhook_max_attempts + 1):
        outcome = deliver(sessions, settings, uuid.UUID(delivery_id))
        assert outcome is not None, "a pending, due delivery was not attempted"
        statuses.append(outcome.status)
        if outcome.status != "pending":
            return statuses
    pytest.fail(f"delivery {delivery_id} still pending after {statuses}")


def _cancel_queued_job(client: TestClient, caller: Caller, **body: Any) -> dict[str, Any]:
    job = submit(client, caller, **body)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=caller.headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    return dict(response.json())


# ----------------------------------------------------------------------------- registration


def test_the_secret_is_shown_once_at_creation(
    open_client: TestClient, alice: Caller, receiver: WebhookReceiver
) -> None:
    created = open_client.post("/v1/webhooks", json={"url": receiver.url, "description": "ci"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    webhook = created.json()
    assert created.headers["location"] == f"/v1/webhooks/{webhook['id']}"
    assert webhook["secret"].startswith("whsec_") and len(base64.b64decode(webhook["secret"][6:])) == 32
    assert webhook["event_types"] == [
        "job.succeeded",
        "job.failed",
        "job.cancelled",
        "job.paused",
        "checkpoint.created",
    ]
    fetched = open_client.get(f"/v1/webhooks/{webhook['id']}", headers=alice.headers).json()
    listed = open_client.get("/v1/webhooks", headers=alice.headers).json()["data"]
    assert "secret" not in fetched and all("secret" not in item for item in listed)
    assert (fetched["url"], fetched["description"]) == (receiver.url, "ci")
    assert [item["id"] for item in listed] == [webhook["id"]]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://example.com:99999/hook", "port"),
        ("http://[::1/hook", "not a valid URL"),
        ("https://example.com/a b", "whitespace"),
    ],
)
def test_a_url_that_is_not_a_plain_http_destination_is_refused(
    open_client: TestClient, alice: Caller, url: str, reason: str
) -> None:
    body = assert_problem(open_client.post("/v1/webhooks", json={"url": url}, headers=alice.headers), 422, reason)
    assert [error["field"] for error in body["errors"]] == ["url"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_a_private_destination_is_refused_by_default(client: TestClient, alice: Caller, url: str) -> None:
    response = client.post("/v1/webhooks", json={"url": url}, headers=alice.headers)
    body = assert_problem(response, 422, "REMIX_WEBHOOK_ALLOW_PRIVATE")
    assert body["errors"][0]["field"] == "url"
    assert client.get("/v1/webhooks", headers=alice.headers).json()["data"] == []


def test_an_unknown_event_type_is_refused(open_client: TestClient, alice: Caller, receiver: WebhookReceiver) -> None:
    response = open_client.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["job.exploded"]}, headers=alice.headers
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "event_types.0"


def test_another_tenants_webhook_does_not_exist_for_them(
    open_client: TestClient, alice: Caller, bob: Caller, receiver: WebhookReceiver
) -> None:
    webhook = _register(open_client, alice, receiver.url)
    base = f"/v1/webhooks/{webhook['id']}"
    assert_problem(open_client.get(base, headers=bob.headers), 404)
    assert_problem(open_client.get(f"{base}/deliveries", headers=bob.headers), 404)
    assert_problem(open_client.post(f"{base}/rotate-secret", headers=bob.headers), 404)
    assert_problem(open_client.delete(base, headers=bob.headers), 404)
    assert open_client.get("/v1/webhooks", headers=bob.headers).json()["data"] == []
    # Bob's cancelled job is not reported to Alice's endpoint.
    _cancel_queued_job(open_client, bob)
    assert _deliveries(open_client, alice, webhook["id"]) == []
    assert open_client.get(base, headers=alice.headers).status_code == 200


# ----------------------------------------------------------------------------- events and deliveries


def test_a_cancelled_job_is_delivered_signed_and_logged(
    open_client: TestClient,
    alice: Caller,
    receiver: WebhookReceiver,
    open_settings: Settings,
    sessions: sessionmaker[Session],
    redis_client: Redis,
) -> None:
    webhook = _register(open_client, alice, receiver.url)
    job = _cancel_queued_job(open_client, alice, metadata={"team": "search"})

    # The cancellation recorded the delivery and, at its commit, sent the task to the maintenance queue.
    [pending] = _deliveries(open_client, alice, webhook["id"])
    assert (pending["status"], pending["attempts"], pending["event_type"]) == ("pending", 0, "job.cancelled")
    sent = [
        m for m in queued_messages(redis_client, MAINTENANCE_QUEUE) if m["kwargs"] == {"delivery_id": pending["id"]}
    ]
    assert [m["task"] for m in sent] == ["worker.deliver_webhook"]

    assert _deliver_until_done(sessions, open_settings, pending["id"]) == ["succeeded"]
    assert deliver(sessions, open_settings, uuid.UUID(pending["id"])) is None  # a second task does nothing

    [request] = receiver.received
    assert request.signed_with(webhook["secret"])
    assert not request.signed_with("whsec_" + base64.b64encode(b"x" * 32).decode())
    assert request.headers["webhook-id"] == f"msg_{uuid.UUID(pending['event_id']).hex}"
    assert request.headers["content-type"] == "application/json"
    payload = request.payload
    assert payload["type"] == "job.cancelled" and payload["timestamp"].endswith("Z")
    assert (payload["data"]["id"], payload["data"]["status"]) == (job["id"], "cancelled")
    assert payload["data"]["metadata"] == {"team": "search"}

    [logged] = _deliveries(open_client, alice, webhook["id"])
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("succeeded", 1, 200)
    assert logged["last_response"] == "ok" and logged["last_error"] is None
    assert logged["delivered_at"] is not None and logged["next_attempt_at"] is None
    assert logged["payload"] == payload


def test_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id(
    open_client: TestClient, alice: Caller, open_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with WebhookReceiver(statuses=[500, 500, 200], answer=b"E" * 5000) as flaky:
        webhook = _register(open_client, alice, flaky.url)
        _cancel_queued_job(open_client, alice)
        [pending] = _deliveries(open_client, alice, webhook["id"])
        assert _deliver_until_done(sessions, open_settings, pending["id"]) == ["pending", "pending", "succeeded"]

    assert [r.answered for r in flaky.received] == [500, 500, 200]
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1  # receivers deduplicate on it
    assert all(r.signed_with(webhook["secret"]) for r in flaky.received)
    [logged] = _deliveries(open_client, alice, webhook["id"])
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("succeeded", 3, 200)
    assert len(logged["last_response"]) == RESPONSE_SNIPPET_CHARS


def test_a_delivery_gives_up_after_the_last_attempt_and_can_be_redelivered(
    open_client: TestClient, alice: Caller, open_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with WebhookReceiver(statuses=[503] * open_settings.webhook_max_attempts + [200]) as down:
        webhook = _register(open_client, alice, down.url)
        _cancel_queued_job(open_client, alice)
        [pending] = _deliveries(open_client, alice, webhook["id"])
        path = f"/v1/webhooks/{webhook['id']}/deliveries/{pending['id']}/redeliver"
        assert_problem(open_client.post(path, headers=alice.headers), 409, "still pending")

        statuses = _deliver_until_done(sessions, open_settings, pending["id"])
        assert statuses == ["pending"] * (open_settings.webhook_max_attempts - 1) + ["failed"]
        failed = open_client.get(f"/v1/webhooks/{webhook['id']}/deliveries/{pending['id']}", headers=alice.headers)
        assert failed.json()["status"] == "failed" and failed.json()["last_error"] == "HTTP 503"
        assert failed.json()["attempts"] == open_settings.webhook_max_attempts

        redelivered = open_client.post(path, headers=alice.headers)
        assert redelivered.status_code == 202 and redelivered.json()["status"] == "pending"
        assert _deliver_until_done(sessions, open_settings, pending["id"]) == ["succeeded"]
    [logged] = _deliveries(open_client, alice, webhook["id"])
    assert (logged["status"], logged["attempts"]) == ("succeeded", open_settings.webhook_max_attempts + 1)
    assert len({r.headers["webhook-id"] for r in down.received}) == 1


def test_redirects_are_not_followed(
    open_client: TestClient, alice: Caller, open_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with WebhookReceiver() as elsewhere, WebhookReceiver(statuses=[302], redirect_to=elsewhere.url) as moved:
        webhook = _register(open_client, alice, moved.url)
        _cancel_queued_job(open_client, alice)
        [pending] = _deliveries(open_client, alice, webhook["id"])
        assert deliver(sessions, open_settings, uuid.UUID(pending["id"])).status == "pending"  # type: ignore[union-attr]
    assert elsewhere.received == [] and len(moved.received) == 1
    [logged] = _deliveries(open_client, alice, webhook["id"])
    assert logged["last_status_code"] == 302 and "not followed" in logged["last_error"]


def test_an_endpoint_receives_only_the_types_it_subscribed_to(
    open_client: TestClient, alice: Caller, receiver: WebhookReceiver, sessions: sessionmaker[Session]
) -> None:
    only_successes = _register(open_client, alice, receiver.url, event_types=["job.succeeded"])
    everything = _register(open_client, alice, receiver.url)
    _cancel_queued_job(open_client, alice)
    assert _deliveries(open_client, alice, only_successes["id"]) == []
    assert [d["event_type"] for d in _deliveries(open_client, alice, everything["id"])] == ["job.cancelled"]

    job = submit(open_client, alice)
    writer = claim_as_worker(sessions, job["id"])
    writer.finish(JobStatus.succeeded, step=5, message="done")
    assert [d["event_type"] for d in _deliveries(open_client, alice, only_successes["id"])] == ["job.succeeded"]


def test_a_checkpoint_registered_twice_is_reported_once(
    open_client: TestClient, alice: Caller, receiver: WebhookReceiver, sessions: sessionmaker[Session]
) -> None:
    webhook = _register(open_client, alice, receiver.url, event_types=["checkpoint.created"])
    job = submit(open_client, alice)
    writer = claim_as_worker(sessions, job["id"])
    writer.register_checkpoint(2, f"jobs/{job['id']}/checkpoints/step-000002", 10, {"loss": 1.0}, kept_steps=set())
    # A resumed attempt re-registers the checkpoint of the step it resumed from.
    writer.register_checkpoint(2, f"jobs/{job['id']}/checkpoints/step-000002", 10, {"loss": 1.0}, kept_steps={2})
    writer.register_checkpoint(4, f"jobs/{job['id']}/checkpoints/step-000004", 10, {"loss": 0.5}, kept_steps={2})
    deliveries = _deliveries(open_client, alice, webhook["id"])
    assert [d["payload"]["data"]["step"] for d in reversed(deliveries)] == [2, 4]
    data = deliveries[0]["payload"]["data"]
    assert data["job_id"] == job["id"] and data["download_url"] == f"/v1/jobs/{job['id']}/checkpoints/4/download"


def test_an_event_rolled_back_with_its_change_is_not_recorded(
    open_client: TestClient, alice: Caller, receiver: WebhookReceiver, sessions: sessionmaker[Session], db: Session
) -> None:
    webhook = _register(open_client, alice, receiver.url)
    job = submit(open_client, alice)
    writer = claim_as_worker(sessions, job["id"])
    writer.finish(JobStatus.failed, step=1, message="diverged", error="diverged")
    # The finished attempt no longer owns the job: a second finish is refused, with its event.
    with pytest.raises(LeaseLost):
        writer.finish(JobStatus.succeeded, step=1, message="late")
    types = [d["event_type"] for d in _deliveries(open_client, alice, webhook["id"])]
    assert types == ["job.failed"]
    assert db.scalar(select(WebhookDelivery).where(WebhookDelivery.webhook_id == uuid.UUID(webhook["id"])))


def test_a_rotated_secret_signs_the_next_attempts(
    open_client: TestClient,
    alice: Caller,
    receiver: WebhookReceiver,
    open_settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    webhook = _register(open_client, alice, receiver.url)
    rotated = open_client.post(f"/v1/webhooks/{webhook['id']}/rotate-secret", headers=alice.headers)
    assert rotated.status_code == 200 and rotated.json()["secret"] != webhook["secret"]
    assert rotated.json()["secret_rotated_at"] is not None
    _cancel_queued_job(open_client, alice)
    [pending] = _deliveries(open_client, alice, webhook["id"])
    _deliver_until_done(sessions, open_settings, pending["id"])
    [request] = receiver.received
    assert request.signed_with(rotated.json()["secret"]) and not request.signed_with(webhook["secret"])


def test_a_destination_turned_private_is_refused_at_delivery(
    open_client: TestClient,
    alice: Caller,
    receiver: WebhookReceiver,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    webhook = _register(open_client, alice, receiver.url)  # allowed by the operator when it was registered
    _cancel_queued_job(open_client, alice)
    [pending] = _deliveries(open_client, alice, webhook["id"])
    assert deliver(sessions, settings, uuid.UUID(pending["id"])) is not None  # by default settings: refused
    assert receiver.received == []
    [logged] = _deliveries(open_client, alice, webhook["id"])
    assert logged["last_error"].startswith("destination refused") and logged["last_status_code"] is None


def test_deleting_a_webhook_drops_its_delivery_log(
    open_client: TestClient, alice: Caller, receiver: WebhookReceiver, db: Session
) -> None:
    webhook = _register(open_client, alice, receiver.url)
    _cancel_queued_job(open_client, alice)
    assert len(_deliveries(open_client, alice, webhook["id"])) == 1
    assert open_client.delete(f"/v1/webhooks/{webhook['id']}", headers=alice.headers).status_code == 204
    assert_problem(open_client.get(f"/v1/webhooks/{webhook['id']}", headers=alice.headers), 404)
    remaining = db.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == uuid.UUID(webhook["id"])))
    assert list(remaining) == []
