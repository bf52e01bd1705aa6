"""Liveness, readiness, database outages (503 + Retry-After), OpenAPI and generic errors."""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem

from service.main import create_app
from service.settings import Settings

DEAD_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
DEAD_BROKER = "redis://127.0.0.1:1/0"


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_503_when_a_dependency_is_down(settings: Settings) -> None:
    broker_down = TestClient(create_app(settings.model_copy(update={"broker_url": DEAD_BROKER})))
    body = assert_problem(broker_down.get("/readyz"), 503, "not ready: broker unavailable")
    assert body["checks"] == {"database": "ok", "broker": "unavailable"}
    db_down = TestClient(create_app(settings.model_copy(update={"database_url": DEAD_DB})))
    response = db_down.get("/readyz")
    assert_problem(response, 503, "not ready: database unavailable")
    assert response.headers["retry-after"] == "5"
    assert db_down.get("/healthz").status_code == 200  # liveness does not depend on the database


def test_database_outage_is_503_problem_with_retry_after(settings: Settings, alice: Caller) -> None:
    db_down = TestClient(create_app(settings.model_copy(update={"database_url": DEAD_DB, "db_retry_after_seconds": 7})))
    response = db_down.get("/v1/jobs", headers=alice.headers)
    body = assert_problem(response, 503, "The database is unavailable; retry later.")
    assert response.headers["retry-after"] == "7"
    assert body["type"] == "urn:remix:problem:database-unavailable"


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/nothing"), 404, "Not Found")
    assert body["type"] == "about:blank" and body["instance"] == "/v1/nothing"
    assert_problem(client.delete("/healthz"), 405, "Method Not Allowed")


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/metrics",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/stream",
        "/v1/jobs/{job_id}/checkpoints",
        "/v1/jobs/{job_id}/checkpoints/{step}/download",
        "/v1/datasets",
        "/v1/datasets/{dataset_id}",
        "/v1/config/schema",
        "/healthz",
        "/readyz",
    } <= paths
    assert "multipart/form-data" in spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 200


def test_config_schema_lists_the_hyperparameters(client: TestClient) -> None:
    schema = client.get("/v1/config/schema").json()
    algorithm = schema["$defs"]["AlgorithmConfig"]["properties"]
    assert algorithm["off_policy_fraction"]["exclusiveMaximum"] == 1.0
    assert algorithm["history_window"]["minimum"] == 1
