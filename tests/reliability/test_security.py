"""Security properties: API keys hashed at rest and compared in constant time, tenant isolation on
every route of the OpenAPI schema, and capped request bodies (uploads and JSON)."""

from __future__ import annotations

import hashlib
import hmac
import io
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from reliability_testing import UPLOAD_LIMIT, Caller, assert_problem, files_under, make_caller, row_counts
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.artifacts import LocalArtifactStore, checkpoint_key
from service.body_limit import JSON_BODY_LIMIT
from service.lifecycle import JobWriter
from service.models import JobStatus, Tenant, WebhookDelivery
from service.repositories.tenants import create_api_key
from service.repositories.webhooks import create_endpoint
from service.settings import Settings
from service.webhooks.delivery import deliver

# ----------------------------------------------------------------------------- API keys


def test_the_database_holds_no_plaintext_key(db: Session, alice: Caller) -> None:
    secret_part = alice.key[len("rmx_") + 8 :]  # what the stored public prefix does not show
    stored = db.execute(text("SELECT * FROM api_keys WHERE tenant_id = :t"), {"t": alice.tenant_id}).mappings().one()
    for column, value in stored.items():
        assert alice.key not in str(value), column
        assert secret_part not in str(value), column
    assert stored["key_hash"] == hashlib.sha256(alice.key.encode()).hexdigest()
    assert stored["prefix"] == alice.key[:12]
    # Nowhere else either: no other table mentions the key.
    for table in ("tenants", "jobs", "job_events", "datasets"):
        dump = db.execute(text(f"SELECT CAST(json_agg(t) AS text) FROM {table} t")).scalar_one()
        assert secret_part not in (dump or ""), table


def test_authentication_compares_digests_with_hmac_compare_digest(
    client: TestClient, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe (and delegate to) the standard library's constant-time comparison.
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def observed(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", observed)
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    digest = hashlib.sha256(alice.key.encode()).hexdigest()
    assert (digest, digest) in calls


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), id="last-char"),
        pytest.param(lambda k: k[:12] + "x" * (len(k) - 12), id="right-prefix-wrong-secret"),
        pytest.param(lambda k: k.upper(), id="case-changed"),
        pytest.param(lambda k: k + "=", id="extra-char"),
        pytest.param(lambda k: hashlib.sha256(k.encode()).hexdigest(), id="the-stored-hash-itself"),
    ],
)
def test_near_miss_keys_are_rejected(client: TestClient, alice: Caller, mutation: Any) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {mutation(alice.key)}"})
    assert_problem(response, 401, "Invalid or revoked API key")


# ----------------------------------------------------------------------------- tenant isolation


@pytest.fixture
def alices_things(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Any
) -> dict[str, str]:
    """A running job of Alice (attempt 1) with a metric, an event and a downloadable checkpoint, a dataset,
    a spare API key (rotating or revoking it leaves the key the test authenticates with working), and a
    webhook with the checkpoint's delivery, failed (so that it can be redelivered)."""
    created = client.post("/v1/jobs", json={"config": {"total_steps": 3}}, headers=alice.headers)
    assert created.status_code == 202, created.text
    job_id = uuid.UUID(created.json()["id"])
    with sessions() as session:
        # .invalid never resolves (RFC 2606): the attempt below fails at once, without any network.
        webhook = create_endpoint(
            session, alice.tenant_id, url="https://hooks.invalid/", event_types=["checkpoint.created"], description=""
        )
    (tmp_path / "config.json").write_text("{}")
    LocalArtifactStore(settings.artifacts_dir).put_dir(checkpoint_key(job_id, 1), tmp_path)
    writer = claim_as_worker(sessions, job_id, worker_id="w")
    writer.record_step(1, {"loss": 1.0})
    writer.add_event("checkpoint", 1, "", {})
    writer.register_checkpoint(1, checkpoint_key(job_id, 1), 0, {}, kept_steps=set())
    with sessions() as session:
        delivery_id = session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook.id)).one()
    single_attempt = settings.model_copy(update={"webhook_retry_schedule": ""})
    assert deliver(sessions, single_attempt, delivery_id).status == "failed"  # type: ignore[union-attr]
    rows = b'{"prompt": "1+1=", "answer": "2"}\n'
    dataset = client.post("/v1/datasets", files={"file": ("d.jsonl", io.BytesIO(rows))}, headers=alice.headers)
    assert dataset.status_code == 201, dataset.text
    with sessions() as session:
        spare, _secret = create_api_key(session, session.get_one(Tenant, alice.tenant_id), name="spare")
    return {
        "job_id": str(job_id),
        "dataset_id": dataset.json()["id"],
        "step": "1",
        "key_id": str(spare.id),
        "tenant_id": str(alice.tenant_id),
        "webhook_id": str(webhook.id),
        "delivery_id": str(delivery_id),
    }


# A body each route with a required one accepts: Bob must get his 404, not a 422 for a missing body.
REQUEST_BODIES = {("PATCH", "/v1/jobs/{job_id}"): {"metadata": {"team": "a"}}}


def _resource_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every route of the schema that names a tenant's resource."""
    routes = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema and route.param_convertors:
            routes += [(method, route.path) for method in sorted(route.methods)]
    return routes


def test_isolation_covers_every_resource_route_of_the_schema(app: Any) -> None:
    schema_routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if "{" in path
    }
    assert set(_resource_routes(app)) == schema_routes
    assert len(schema_routes) >= 8


def test_another_tenant_can_neither_read_cancel_nor_download(
    app: Any, client: TestClient, alice: Caller, bob: Caller, alices_things: dict[str, str], db: Session
) -> None:
    before = row_counts(db)
    for method, template in _resource_routes(app):
        url = template.format(**alices_things)
        response = client.request(method, url, headers=bob.headers, json=REQUEST_BODIES.get((method, template)))
        if template.startswith("/v1/tenants/"):
            # Admin-only: the same 403 whatever the id, so it tells nothing about which tenants exist.
            assert_problem(response, 403, "admin API key")
            continue
        resource = "dataset" if "{dataset_id}" in template else "job"
        ident = alices_things[resource + "_id"]
        if "{key_id}" in template:
            resource, ident = "API key", alices_things["key_id"]
        if "{webhook_id}" in template:
            resource, ident = "webhook", alices_things["webhook_id"]
        assert_problem(response, 404, f"{resource} {ident} not found")
        assert alices_things["job_id"] not in response.text.replace(url, "") or resource == "job"
    assert row_counts(db) == before  # Bob's cancel wrote no event and changed no row count
    spare = client.get(f"/v1/keys/{alices_things['key_id']}", headers=alice.headers).json()
    assert spare["revoked_at"] is None  # and Bob's rotate and revoke left Alice's key alone

    # ... while Alice reaches each of them: her resume first (of her running job: a no-op 200), her pause
    # after the reads, and her cancel and her webhook's deletion last, so that the reads see a running job
    # and an existing webhook.
    def order(route: tuple[str, str]) -> int:
        if route[1].endswith("/resume"):
            return 0
        if route[1].endswith("/cancel") or route == ("DELETE", "/v1/webhooks/{webhook_id}"):
            return 3
        return 2 if route[1].endswith("/pause") else 1

    for method, template in sorted(_resource_routes(app), key=order):
        url = template.format(**alices_things)
        if url.endswith("/stream"):
            continue  # her job is still running: the stream would not end; covered below
        if template.startswith("/v1/tenants/"):
            continue  # admin-only, and hers is a tenant key: tests/service/test_tenants_routes.py
        status = client.request(method, url, headers=alice.headers, json=REQUEST_BODIES.get((method, template)))
        status = status.status_code
        if "{key_id}" in template:  # read, rotate (201, a new key), then revoke (204) her spare key
            assert status == {"POST": 201, "DELETE": 204}.get(method, 200), url
        elif "{webhook_id}" in template:  # read, rotate its secret, redeliver (202), then delete (204)
            assert status == {"DELETE": 204}.get(method, 202 if url.endswith("/redeliver") else 200), url
        else:
            assert status in (200, 202), url
    job = client.get(f"/v1/jobs/{alices_things['job_id']}", headers=alice.headers).json()
    assert job["status"] == "cancelling" and job["cancel_requested"] is True


def test_stream_of_another_tenants_job_is_404_and_the_owner_gets_it(
    client: TestClient, alice: Caller, bob: Caller, alices_things: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    job_id = alices_things["job_id"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/stream", headers=bob.headers), 404, f"job {job_id} not found")
    JobWriter(sessions, uuid.UUID(job_id), attempt=1).finish(JobStatus.succeeded, step=1, message="done")
    stream = client.get(f"/v1/jobs/{job_id}/stream", headers=alice.headers)
    assert stream.status_code == 200 and "event: end" in stream.text and "event: metric" in stream.text


def test_collections_and_references_never_show_another_tenant(
    client: TestClient, alice: Caller, bob: Caller, alices_things: dict[str, str], db: Session
) -> None:
    assert client.get("/v1/jobs", headers=bob.headers).json()["data"] == []
    assert client.get("/v1/datasets", headers=bob.headers).json()["data"] == []
    for status in ("queued", "running"):
        assert client.get(f"/v1/jobs?status={status}", headers=bob.headers).json()["data"] == []
    before = row_counts(db)
    dataset_id = alices_things["dataset_id"]
    for field in ("dataset_id", "eval_dataset_id"):
        response = client.post("/v1/jobs", json={field: dataset_id}, headers=bob.headers)
        assert_problem(response, 422, f"dataset {dataset_id} not found")
    stored_key = client.get(f"/v1/datasets/{dataset_id}", headers=alice.headers).json()
    assert stored_key["id"] == dataset_id
    by_key = client.post(
        "/v1/jobs",
        json={"config": {"data": {"train_path": f"datasets/{dataset_id}/d.jsonl"}}},
        headers=bob.headers,
    )
    assert_problem(by_key, 422, "config.data.train_path")
    # An Idempotency-Key Alice used means nothing to Bob: he gets his own job, never hers.
    key = str(uuid.uuid4())
    mine = client.post("/v1/jobs", json={}, headers=alice.headers | {"Idempotency-Key": key})
    theirs = client.post("/v1/jobs", json={}, headers=bob.headers | {"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 202 and mine.json()["id"] != theirs.json()["id"]
    assert row_counts(db)["jobs"] == before["jobs"] + 2


# ----------------------------------------------------------------------------- size caps


@pytest.fixture
def unchanged(db: Session, settings: Settings, alice: Caller) -> Iterator[None]:
    before, files = row_counts(db), files_under(settings.artifacts_dir)
    yield
    assert row_counts(db) == before
    assert files_under(settings.artifacts_dir) == files


@pytest.mark.usefixtures("unchanged")
def test_an_upload_over_the_cap_is_413_and_never_stored(client: TestClient, alice: Caller) -> None:
    row = b'{"prompt": "1+1=", "answer": "2"}\n'
    at_limit = row * (UPLOAD_LIMIT // len(row))
    over = at_limit + row
    response = client.post("/v1/datasets", files={"file": ("big.jsonl", over)}, headers=alice.headers)
    problem = assert_problem(response, 413, "upload limit")
    assert problem["limit"] == UPLOAD_LIMIT


def _drive(app: Any, path: str, content_type: str, first: bytes, filler: int, headers: list) -> tuple[int, int]:
    """Send a chunked body (no Content-Length) of `first` and then up to `filler` 64 KiB chunks to
    the ASGI app; returns (status, chunks the app pulled). Shows how much a rejected body was read."""
    chunks = [first] + [b"x" * 65536] * filler
    pulled = 0
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type.encode()), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    return status[0], pulled


@pytest.mark.usefixtures("unchanged")
def test_bodies_without_content_length_are_cut_off_while_streaming(app: Any, alice: Caller) -> None:
    auth = [(b"authorization", alice.headers["Authorization"].encode())]
    filler = 1000  # 64 MiB offered
    head = b'--cap\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    status, pulled = _drive(app, "/v1/datasets", "multipart/form-data; boundary=cap", head, filler, auth)
    assert status == 413
    assert pulled <= UPLOAD_LIMIT // 65536 + 3  # stopped right after the cap, never buffered whole
    status, pulled = _drive(app, "/v1/jobs", "application/json", b'{"name": "', filler, auth)
    assert status == 413
    assert pulled <= JSON_BODY_LIMIT // 65536 + 3


@pytest.mark.usefixtures("unchanged")
def test_an_oversized_json_body_is_413_before_validation(client: TestClient, alice: Caller) -> None:
    padding = "x" * (JSON_BODY_LIMIT + 1)
    declared = client.post("/v1/jobs", json={"name": padding}, headers=alice.headers)
    problem = assert_problem(declared, 413, "request body exceeds")
    assert problem["type"] == "urn:remix:problem:body-too-large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"config": {"pad": "'
        for _ in range(JSON_BODY_LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    streamed = client.post("/v1/jobs", content=chunks(), headers=alice.headers | {"Content-Type": "application/json"})
    assert_problem(streamed, 413, "request body exceeds")
    small = client.post("/v1/jobs", json={"name": "x" * 1000, "config": {"total_steps": 0}}, headers=alice.headers)
    assert_problem(small, 422, "name")  # under the cap, validation answers as usual


def test_the_cap_also_holds_on_a_real_server(live_url: str, alice: Caller) -> None:
    # Only the headers are sent: a declared length over the cap is refused without reading a byte.
    host, port = live_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            (
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: {alice.headers['Authorization']}\r\nContent-Length: {10**10}\r\n\r\n"
            ).encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply
    with httpx.Client(base_url=live_url, headers=alice.headers, timeout=30) as http:
        assert http.get("/v1/jobs").status_code == 200  # the server is fine afterwards


@pytest.fixture(scope="module")
def live_url(settings: Settings) -> Iterator[str]:
    from live_server import serve

    with serve(settings) as url:
        yield url


def test_admin_only_options_are_refused_to_tenants(client: TestClient, alice: Caller, database_url: str) -> None:
    local = client.post("/v1/jobs", json={"base_model": "/srv/models/private"}, headers=alice.headers)
    assert_problem(local, 422, "hub id")
    remote_code = client.post(
        "/v1/jobs", json={"config": {"model": {"trust_remote_code": True}}}, headers=alice.headers
    )
    assert_problem(remote_code, 403, "admin")
    admin = make_caller(database_url, admin=True)
    allowed = client.post("/v1/jobs", json={"config": {"model": {"trust_remote_code": True}}}, headers=admin.headers)
    assert allowed.status_code == 202, allowed.text
