"""Webhooks through real processes: a uvicorn API, a training worker and a maintenance worker on
Postgres + Redis deliver signed events to a receiver (a local HTTP server standing in for the
tenant's), retrying through failures with the configured backoff.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from testing_support import WebhookReceiver
from worker_testing import ManagedProcess, running_api, service_env, tiny_job_config, wait_for

from service.repositories.tenants import create_api_key, get_or_create_tenant
from service.settings import Settings
from worker.commands import celery_worker_argv

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 600  # first use builds the tiny model (~90 s) into the shared cache
# The receiver is on 127.0.0.1, so the operator setting that allows private destinations is on.
WEBHOOK_ENV = {"REMIX_WEBHOOK_ALLOW_PRIVATE": "true", "REMIX_WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,1"}


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One artifact store for the module: the API and the workers must see the same files."""
    return Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        heartbeat_seconds=0.5,
        stale_after_seconds=30.0,
    )


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_api(settings, tmp_path_factory.mktemp("api") / "api.log", **WEBHOOK_ENV) as url:
        yield url


@pytest.fixture
def client(api_url: str, sessions: Any) -> Iterator[httpx.Client]:
    with sessions() as session:
        _row, key = create_api_key(session, get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}"))
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield http


@pytest.fixture
def start_process(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    started: list[ManagedProcess] = []

    def start(name: str, queues: list[str], pool: str = "prefork") -> ManagedProcess:
        argv = celery_worker_argv(queues, f"{name}@%h", pool=pool, extra=["--without-gossip", "--without-mingle"])
        process = ManagedProcess(argv, service_env(settings, **WEBHOOK_ENV), tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _register(client: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _settled_deliveries(client: httpx.Client, webhook_id: str, count: int, worker: ManagedProcess) -> list[dict]:
    def settled() -> list[dict] | None:
        rows = client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["data"]
        done = [row for row in rows if row["status"] != "pending"]
        return rows if len(rows) >= count and len(done) == len(rows) else None

    return list(wait_for(settled, timeout=120, what=f"{count} settled deliveries", on_timeout=worker.log_text))


def test_a_failing_receiver_is_retried_by_the_worker_until_it_answers(client: httpx.Client, start_process: Any) -> None:
    maintenance = start_process("maintenance", ["maintenance"], pool="solo")
    with WebhookReceiver(statuses=[500, 500, 200]) as flaky:
        webhook = _register(client, flaky.url, event_types=["job.cancelled"])
        job = client.post("/v1/jobs", json={"config": tiny_job_config()}).json()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        [delivery] = _settled_deliveries(client, webhook["id"], 1, maintenance)

    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("succeeded", 3, 200)
    assert [r.answered for r in flaky.received] == [500, 500, 200]
    assert all(r.signed_with(webhook["secret"]) for r in flaky.received)
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1
    assert flaky.received[0].payload["data"]["id"] == job["id"]


def test_a_trained_job_reports_its_checkpoints_and_its_success(
    client: httpx.Client, start_process: Any, settings: Settings
) -> None:
    trainer = start_process("trainer", [settings.task_queue])
    maintenance = start_process("maintenance", ["maintenance"], pool="solo")
    with WebhookReceiver() as receiver:
        webhook = _register(client, receiver.url)
        body = {"config": tiny_job_config(), "metadata": {"team": "search"}}
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        wait_for(
            lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in {"succeeded", "failed"},
            timeout=JOB_TIMEOUT,
            what="the job to finish",
            on_timeout=trainer.log_text,
        )
        deliveries = _settled_deliveries(client, webhook["id"], 3, maintenance)

    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert sorted(d["event_type"] for d in deliveries) == ["checkpoint.created", "checkpoint.created", "job.succeeded"]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in deliveries)
    assert all(r.signed_with(webhook["secret"]) for r in receiver.received)
    by_type: dict[str, list[dict]] = {}
    for request in receiver.received:
        by_type.setdefault(request.payload["type"], []).append(request.payload["data"])
    assert sorted(c["step"] for c in by_type["checkpoint.created"]) == [2, 4]
    assert all(c["job_id"] == job_id for c in by_type["checkpoint.created"])
    [succeeded] = by_type["job.succeeded"]
    assert (succeeded["id"], succeeded["status"], succeeded["current_step"]) == (job_id, "succeeded", 4)
    assert succeeded["metadata"] == {"team": "search"}
