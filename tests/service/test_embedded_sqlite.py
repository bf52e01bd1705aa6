"""The embedded default (SQLite database + SQLite-backed broker) serves the same API."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from service_testing import make_caller
from sqlalchemy import text
from testing_support import claim_as_worker

from service.db import get_engine, session_factory
from service.main import create_app
from service.migrate import upgrade
from service.models import JobStatus
from service.settings import Settings


def test_embedded_stack_end_to_end(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/var/remix.db",
        broker_url=f"sqla+sqlite:///{tmp_path}/var/broker.db",
        artifacts_dir=str(tmp_path / "var/artifacts"),
        sse_poll_seconds=0.02,
    )
    upgrade(settings.database_url)
    with get_engine(settings.database_url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    caller = make_caller(settings.database_url)
    client = TestClient(create_app(settings))
    assert client.get("/readyz").status_code == 200

    ids = []
    for i in range(3):
        response = client.post(
            "/v1/jobs", json={"config": {"seed": i}}, headers=caller.headers | {"Idempotency-Key": f"k{i}"}
        )
        assert response.status_code == 202
        ids.append(response.json()["id"])
    replay = client.post("/v1/jobs", json={"config": {"seed": 0}}, headers=caller.headers | {"Idempotency-Key": "k0"})
    assert replay.json()["id"] == ids[0]
    page = client.get("/v1/jobs", params={"limit": 2}, headers=caller.headers).json()
    rest = client.get("/v1/jobs", params={"limit": 2, "after": page["next_cursor"]}, headers=caller.headers).json()
    assert [j["id"] for j in page["data"] + rest["data"]] == list(reversed(ids))

    job_id = uuid.UUID(ids[0])
    writer = claim_as_worker(session_factory(settings.database_url), job_id, worker_id="w")  # the worker's claim
    writer.record_step(1, {"loss": 2.0})
    writer.record_step(1, {"loss": 1.0})  # upsert on SQLite too
    writer.finish(JobStatus.succeeded, step=1, message="done")
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=caller.headers).json()["data"]
    assert [(m["step"], m["metrics"]) for m in metrics] == [(1, {"loss": 1.0})]
    stream = client.get(f"/v1/jobs/{job_id}/stream", headers=caller.headers).text
    assert "event: metric" in stream and stream.rstrip().endswith('"status":"succeeded"}')
