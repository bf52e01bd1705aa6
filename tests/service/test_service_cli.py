"""`remix-service` admin CLI: create-key, revoke-key, migrate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_testing import assert_problem
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from service.cli import app
from service.settings import get_settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()  # the CLI reads REMIX_* from the environment given to each run
    yield
    get_settings.cache_clear()


def test_create_key_prints_a_working_key_once(client: TestClient, database_url: str) -> None:
    result = runner.invoke(
        app,
        ["create-key", "--tenant", "cli-tenant", "--name", "ci"],
        env={"REMIX_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("rmx_")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200

    prefix = key[:12]
    revoked = runner.invoke(app, ["revoke-key", prefix], env={"REMIX_DATABASE_URL": database_url})
    assert revoked.exit_code == 0 and "revoked 1 key(s)" in revoked.stdout
    assert_problem(client.get("/v1/jobs", headers=headers), 401, "Invalid or revoked API key")
    again = runner.invoke(app, ["revoke-key", prefix], env={"REMIX_DATABASE_URL": database_url})
    assert again.exit_code == 1


def test_admin_keys_share_the_tenant(client: TestClient, database_url: str) -> None:
    env = {"REMIX_DATABASE_URL": database_url}
    user = runner.invoke(app, ["create-key", "--tenant", "shared-cli"], env=env).stdout.splitlines()[0]
    admin = runner.invoke(app, ["create-key", "--tenant", "shared-cli", "--admin"], env=env).stdout.splitlines()[0]
    job = client.post(
        "/v1/jobs",
        json={"base_model": "/srv/base", "config": {}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert job.status_code == 202
    seen = client.get(f"/v1/jobs/{job.json()['id']}", headers={"Authorization": f"Bearer {user}"})
    assert seen.status_code == 200


def test_migrate_builds_an_embedded_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/remix.db"
    result = runner.invoke(app, ["migrate"], env={"REMIX_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"tenants", "api_keys", "datasets", "jobs", "job_metrics", "job_events", "checkpoints"} <= tables
