"""Bearer API keys (401 problems) and tenant isolation on every route (404, never 403)."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service import lifecycle
from service.artifacts import LocalArtifactStore, checkpoint_key
from service.models import JobStatus, utcnow
from service.repositories.tenants import revoke_key
from service.security import hash_api_key, public_prefix
from service.settings import Settings


def test_missing_key_is_401_with_challenge(client: TestClient) -> None:
    response = client.get("/v1/jobs")
    assert_problem(response, 401, "Missing API key")
    assert response.headers["www-authenticate"] == 'Bearer realm="remix"'
    basic = client.get("/v1/jobs", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert_problem(basic, 401, "Missing API key")


def test_invalid_key_is_401_invalid_token(client: TestClient, alice: Caller) -> None:
    for key in ("rmx_" + "x" * 43, "not-a-key", alice.key[:-1]):
        response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert_problem(response, 401, "Invalid or revoked API key")
        assert response.headers["www-authenticate"] == 'Bearer realm="remix", error="invalid_token"'


def test_revoked_key_is_401(client: TestClient, db: Session, database_url: str) -> None:
    from service_testing import make_caller

    caller = make_caller(database_url)
    assert client.get("/v1/jobs", headers=caller.headers).status_code == 200
    assert revoke_key(db, public_prefix(caller.key)) == 1
    assert_problem(client.get("/v1/jobs", headers=caller.headers), 401, "Invalid or revoked API key")


def test_keys_are_stored_hashed(db: Session, alice: Caller) -> None:
    from sqlalchemy import select

    from service.models import ApiKey

    row = db.scalars(select(ApiKey).where(ApiKey.tenant_id == alice.tenant_id)).one()
    assert alice.key.startswith("rmx_") and len(alice.key) > 40
    assert row.key_hash == hash_api_key(alice.key) and alice.key not in row.key_hash
    assert row.prefix == alice.key[:12]


def test_other_tenants_resources_do_not_exist(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = submit(client, alice)["id"]
    (tmp_path / "config.json").write_text("{}")
    key = checkpoint_key(job_id, 1)
    LocalArtifactStore(settings.artifacts_dir).put_dir(key, tmp_path)
    writer = claim_as_worker(sessions, job_id)
    writer.register_checkpoint(1, key, 0, {}, kept_steps=set())
    writer.record_step(1, {"loss": 1.0})
    # Its worker dies: the reaper re-queues it with its outputs, so Alice's cancel below is immediate.
    cutoff = utcnow() + timedelta(seconds=1)  # stale whatever the limit
    assert lifecycle.reap_job(sessions, writer.job_id, cutoff=cutoff, settings=settings) is JobStatus.queued
    rows = b'{"prompt": "1+1", "answer": "2"}\n'
    dataset_id = client.post(
        "/v1/datasets", files={"file": ("d.jsonl", io.BytesIO(rows))}, headers=alice.headers
    ).json()["id"]

    job_routes = [
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/metrics"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/stream"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints/1/download"),
    ]
    for method, url in job_routes:
        assert_problem(client.request(method, url, headers=bob.headers), 404, f"job {job_id} not found")
        assert client.request(method, url, headers=alice.headers).status_code in (200, 202), url
    assert_problem(
        client.get(f"/v1/datasets/{dataset_id}", headers=bob.headers), 404, f"dataset {dataset_id} not found"
    )
    assert client.get("/v1/jobs", headers=bob.headers).json()["data"] == []
    assert client.get("/v1/datasets", headers=bob.headers).json()["data"] == []
    # Bob's cancel attempt did not touch Alice's job (Alice cancelled it herself above).
    assert json.loads(client.get(f"/v1/jobs/{job_id}", headers=alice.headers).text)["status"] == "cancelled"
