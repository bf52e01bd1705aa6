"""POST /v1/jobs with `config.integrations`: trackers are validated at submission, local MLflow stores
only where the operator allows them (REMIX_TRACKING_ALLOW_LOCAL)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit

from service.main import create_app
from service.settings import Settings

MLFLOW = {"type": "mlflow", "tracking_uri": "https://mlflow.example.com", "experiment_name": "math-rl"}
WANDB = {"type": "wandb", "project": "remix", "mode": "offline", "tags": ["baseline"]}


def _errors(response) -> list[str]:
    return [error["field"] for error in assert_problem(response, 422)["errors"]]


def test_a_job_keeps_its_integrations_with_their_defaults(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice, {"total_steps": 5, "integrations": [MLFLOW, WANDB]})
    assert job["config"]["integrations"] == [
        {**MLFLOW, "run_name": None, "tags": {}},
        {**WANDB, "entity": None, "name": None},
    ]
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    assert fetched["config"]["integrations"][0]["tracking_uri"] == "https://mlflow.example.com"
    assert submit(client, alice, {"total_steps": 5})["config"]["integrations"] == []


def test_an_unknown_integration_type_is_422_naming_the_entry(client: TestClient, alice: Caller) -> None:
    config = {"integrations": [MLFLOW, {"type": "neptune", "project": "p"}]}
    response = client.post("/v1/jobs", json={"config": config}, headers=alice.headers)
    assert _errors(response) == ["config.integrations.1"]
    assert "'mlflow', 'wandb'" in response.json()["detail"]


def test_unknown_fields_wrong_modes_and_too_many_integrations_are_422(client: TestClient, alice: Caller) -> None:
    cases = {
        "config.integrations.0.wandb.api_key": [{**WANDB, "api_key": "secret"}],
        "config.integrations.0.wandb.mode": [{**WANDB, "mode": "disabled"}],
        "config.integrations.0.mlflow.tracking_uri": [{"type": "mlflow"}],
        "config.integrations": [WANDB] * 5,
    }
    for field, integrations in cases.items():
        response = client.post("/v1/jobs", json={"config": {"integrations": integrations}}, headers=alice.headers)
        assert _errors(response) == [field], integrations


def test_credentials_in_a_tracking_uri_are_refused(client: TestClient, alice: Caller) -> None:
    config = {"integrations": [{**MLFLOW, "tracking_uri": "https://user:token@mlflow.example.com"}]}
    response = client.post("/v1/jobs", json={"config": config}, headers=alice.headers)
    assert _errors(response) == ["config.integrations.0.mlflow.tracking_uri"]
    assert "credentials" in response.json()["detail"]


def test_local_mlflow_stores_are_refused_unless_the_operator_allows_them(
    client: TestClient, settings: Settings, alice: Caller
) -> None:
    for uri in ("file:///etc/mlruns", "sqlite:////tmp/mlflow.db", "/var/lib/mlruns", "./mlruns"):
        config = {"integrations": [WANDB, {**MLFLOW, "tracking_uri": uri}]}
        response = client.post("/v1/jobs", json={"config": config}, headers=alice.headers)
        assert _errors(response) == ["config.integrations.1.tracking_uri"], uri
        assert "REMIX_TRACKING_ALLOW_LOCAL" in response.json()["detail"]

    permissive = TestClient(create_app(settings.model_copy(update={"tracking_allow_local": True})))
    job = submit(permissive, alice, {"integrations": [{**MLFLOW, "tracking_uri": "sqlite:////tmp/mlflow.db"}]})
    assert job["config"]["integrations"][0]["tracking_uri"] == "sqlite:////tmp/mlflow.db"
