"""GET /metrics: Prometheus text with HTTP, job-state, queue-depth and worker-progress metrics, readable
only with the operator's metrics token or an admin API key (the metrics cover every tenant)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.main import create_app
from service.models import JobStatus
from service.settings import Settings

METRICS_TOKEN = "operator-metrics-token-for-tests"
TOKEN_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def scrape(client: TestClient, headers: dict[str, str]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics scrape, keyed by (name, labels)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_endpoint_lists_every_metric_family(client: TestClient, alice: Caller, admin: Caller) -> None:
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    samples = scrape(client, admin.headers)
    names = {name for name, _ in samples}
    assert {
        "remix_http_requests_total",
        "remix_http_request_duration_seconds_bucket",
        "remix_jobs",
        "remix_queue_depth",
        "remix_training_steps_total",
        "remix_scrape_source_up",
    } <= names
    assert value(samples, "remix_scrape_source_up", source="database") == 1
    assert value(samples, "remix_scrape_source_up", source="broker") == 1
    assert {dict(labels)["state"] for name, labels in samples if name == "remix_jobs"} == {s.value for s in JobStatus}


def test_metrics_endpoint_jobs_by_state_and_queue_depth_follow_the_database(
    client: TestClient, settings: Settings, alice: Caller, admin: Caller, sessions: sessionmaker[Session]
) -> None:
    before = scrape(client, admin.headers)
    first = uuid.UUID(submit(client, alice)["id"])
    submit(client, alice)
    writer = claim_as_worker(sessions, first, worker_id="w-prom")
    after = scrape(client, admin.headers)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("remix_jobs", state="queued") == 1
    assert delta("remix_jobs", state="running") == 1
    assert delta("remix_queue_depth", queue=settings.task_queue) == 2  # nothing consumes the test queue

    writer.finish(JobStatus.failed, step=0, error="boom", message="boom")
    final = scrape(client, admin.headers)
    assert value(final, "remix_jobs", state="running") == value(before, "remix_jobs", state="running")
    assert value(final, "remix_jobs", state="failed") == (value(before, "remix_jobs", state="failed") or 0) + 1


def test_metrics_endpoint_reports_worker_progress_of_running_jobs(
    client: TestClient, alice: Caller, admin: Caller, sessions: sessionmaker[Session]
) -> None:
    job_id = uuid.UUID(submit(client, alice, config={"total_steps": 9})["id"])
    writer = claim_as_worker(sessions, job_id, worker_id="w-speed")
    steps_before = value(scrape(client, admin.headers), "remix_training_steps_total")
    writer.record_step(1, {"step_s": 9.0, "gen_tokens_per_s": 10.0})
    writer.record_step(2, {"step_s": 1.5, "gen_tokens_per_s": 1234.0})

    samples = scrape(client, admin.headers)
    labels = {"job_id": str(job_id), "worker_id": "w-speed"}
    assert value(samples, "remix_worker_step_seconds", **labels) == 1.5  # the latest step, not the first
    assert value(samples, "remix_worker_gen_tokens_per_second", **labels) == 1234.0
    assert value(samples, "remix_job_total_steps", **labels) == 9
    assert value(samples, "remix_worker_heartbeat_age_seconds", **labels) is not None
    assert value(samples, "remix_training_steps_total") == steps_before + 2

    writer.finish(JobStatus.succeeded, step=2, message="done")
    assert value(scrape(client, admin.headers), "remix_worker_step_seconds", **labels) is None  # only active jobs


def test_metrics_endpoint_labels_requests_by_route_template(client: TestClient, alice: Caller, admin: Caller) -> None:
    missing = uuid.uuid4()
    before = scrape(client, admin.headers)
    for _ in range(3):
        assert client.get(f"/v1/jobs/{missing}", headers=alice.headers).status_code == 404
    after = scrape(client, admin.headers)
    labels = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}
    count_before = value(before, "remix_http_requests_total", **labels) or 0
    assert value(after, "remix_http_requests_total", **labels) == count_before + 3
    assert value(after, "remix_http_request_duration_seconds_count", **labels) == count_before + 3
    assert not any(str(missing) in dict(labels).get("route", "") for _, labels in after)


@pytest.mark.parametrize("broken", ["database", "broker"])
def test_metrics_endpoint_survives_an_unreachable_source(settings: Settings, broken: str) -> None:
    overrides: dict[str, object] = (
        {"database_url": settings.database_url.rsplit("/", 1)[0] + "/remix_no_such_db"}
        if broken == "database"
        else {"broker_url": "redis://127.0.0.1:1/0"}
    )
    # The metrics token is checked without the database, so it still works while the database is down.
    overrides["metrics_token"] = SecretStr(METRICS_TOKEN)
    with TestClient(create_app(settings.model_copy(update=overrides))) as client:
        samples = scrape(client, TOKEN_HEADERS)
    assert value(samples, "remix_scrape_source_up", source=broken) == 0
    healthy = {"database", "broker"} - {broken}
    assert all(value(samples, "remix_scrape_source_up", source=s) == 1 for s in healthy)


def _refused_without_metrics(response, status: int, detail: str) -> None:  # type: ignore[no-untyped-def]
    assert_problem(response, status, detail)
    assert "remix_jobs" not in response.text and "remix_queue_depth" not in response.text


def test_metrics_need_the_operator_token_or_an_admin_key(
    client: TestClient, settings: Settings, alice: Caller, admin: Caller
) -> None:
    job_id = submit(client, alice)["id"]
    with TestClient(create_app(settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)}))) as client:
        missing = client.get("/metrics")
        _refused_without_metrics(missing, 401, "Authorization: Bearer <metrics token or admin API key>")
        assert missing.headers["www-authenticate"] == 'Bearer realm="remix"'
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
        _refused_without_metrics(wrong, 401, "Invalid metrics token or API key")
        assert wrong.headers["www-authenticate"] == 'Bearer realm="remix", error="invalid_token"'
        # A tenant's own key is valid, but the metrics show every tenant's jobs.
        tenant = client.get("/metrics", headers=alice.headers)
        _refused_without_metrics(tenant, 403, "needs the metrics token or an admin API key")
        assert job_id not in tenant.text
        for headers in (TOKEN_HEADERS, admin.headers):
            assert value(scrape(client, headers), "remix_scrape_source_up", source="database") == 1


def test_without_a_metrics_token_only_admin_keys_read_the_metrics(
    client: TestClient, alice: Caller, admin: Caller
) -> None:
    _refused_without_metrics(client.get("/metrics"), 401, "Authorization: Bearer")
    _refused_without_metrics(client.get("/metrics", headers=TOKEN_HEADERS), 401, "Invalid metrics token")
    _refused_without_metrics(client.get("/metrics", headers=alice.headers), 403, "admin API key")
    assert ("remix_jobs", frozenset({("state", "queued")})) in scrape(client, admin.headers)


def test_metrics_are_served_unauthenticated_only_when_enabled(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"metrics_unauthenticated": True}))) as client:
        assert ("remix_jobs", frozenset({("state", "queued")})) in scrape(client, {})
