"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis, in-process ASGI).

Every operation gets valid and invalid generated requests (bodies, path, query and header
parameters, NUL characters included). Each case is sent twice: as generated, and with its
`job_id` / `dataset_id` / `step` replaced by a real resource of the caller (a finished job with
metrics, events and a checkpoint), so routes are exercised past their 404s. Invariants: no server
error except a documented 503 with Retry-After, and every error is application/problem+json.
Generation is derandomized and bounded, and uses no example database, so runs are repeatable.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from reliability_testing import Caller, make_caller
from schemathesis import GenerationMode
from sqlalchemy import text
from testing_support import claim_as_worker

from service.api.deps import SessionDep
from service.artifacts import LocalArtifactStore, checkpoint_key
from service.main import create_app
from service.models import JobStatus
from service.settings import Settings

MAX_EXAMPLES = 50  # per operation and mode: 15 operations x 2 modes stay well under two minutes
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def owner(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture(scope="module")
def resources(
    client: TestClient,
    owner: Caller,
    database_url: str,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """A finished job of `owner` with a metric, events and a downloadable checkpoint, and a dataset."""
    from service.db import session_factory

    created = client.post("/v1/jobs", json={"config": {"total_steps": 2}}, headers=owner.headers)
    assert created.status_code == 202, created.text
    job_id = uuid.UUID(created.json()["id"])
    folder = tmp_path_factory.mktemp("checkpoint")
    (folder / "config.json").write_text("{}")
    LocalArtifactStore(settings.artifacts_dir).put_dir(checkpoint_key(job_id, 1), folder)
    writer = claim_as_worker(session_factory(database_url), job_id, worker_id="fuzz-worker")
    writer.record_step(1, {"loss": 0.5})
    writer.add_event("checkpoint", 1, "saved", {})
    writer.register_checkpoint(1, checkpoint_key(job_id, 1), 2, {}, kept_steps=set())
    writer.finish(JobStatus.succeeded, step=1, message="done")  # terminal: streams end at once
    rows = b'{"prompt": "1+1=", "answer": "2"}\n'
    dataset = client.post("/v1/datasets", files={"file": ("d.jsonl", io.BytesIO(rows))}, headers=owner.headers)
    assert dataset.status_code == 201, dataset.text
    return {"job_id": str(job_id), "dataset_id": dataset.json()["id"], "step": "1"}


def _cases() -> list[Any]:
    """(method, path, mode) for every operation; invalid input only where the operation takes input.
    The schema does not depend on settings."""
    paths = create_app(Settings()).openapi()["paths"]
    cases = []
    for path, operations in paths.items():
        for method, operation in operations.items():
            modes = [GenerationMode.POSITIVE]
            if operation.get("parameters") or operation.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            cases += [pytest.param(method.upper(), path, m, id=f"{method.upper()} {path} {m.value}") for m in modes]
    return cases


@pytest.fixture(scope="module")
def api_schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _documented_statuses(case: Any) -> set[str]:
    return set(case.operation.definition.raw.get("responses", {}))


def _header(response: Any, name: str) -> str:
    """A header of a schemathesis response (header values are lists there)."""
    for key, values in response.headers.items():
        if key.lower() == name:
            return values[0] if isinstance(values, list) else str(values)
    return ""


def _check(case: Any, response: Any) -> None:
    status = response.status_code
    where = f"{case.method} {case.formatted_path} -> {status}: {response.content[:500]!r}"
    if status >= 500:
        assert status == 503 and "503" in _documented_statuses(case), where
        assert _header(response, "retry-after"), where
    if status >= 400:
        assert _header(response, "content-type").startswith(PROBLEM_JSON), where


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_no_server_errors_and_every_error_is_problem_json(
    api_schema: Any, owner: Caller, resources: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same cases on every run
        database=None,  # and no example database written to disk
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        headers = {**(case.headers or {}), **owner.headers}
        _check(case, case.call(headers=headers))
        owned = {name: value for name, value in resources.items() if name in (case.path_parameters or {})}
        if owned:
            case.path_parameters = {**case.path_parameters, **owned}
            _check(case, case.call(headers=headers))

    fuzz()


def test_unauthenticated_requests_get_401_problems(client: TestClient, app: Any) -> None:
    # The fuzz run authenticates; here every protected operation is called without a key.
    protected = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert len(protected) >= 12
    for method, path in protected:
        ids = {name: uuid.uuid4() for name in ("job_id", "dataset_id", "tenant_id", "key_id")}
        url = path.format(**ids, step=1)
        response = client.request(method, url)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON


def test_a_value_the_database_refuses_is_a_422_not_a_500(settings: Settings, database_url: str) -> None:
    # Safety net behind request validation: a real psycopg DataError raised inside a route.
    app = create_app(settings)

    @app.get("/refused")
    def refused(session: SessionDep) -> dict[str, Any]:
        session.execute(text("SELECT CAST(:value AS text)"), {"value": "a\x00b"})
        return {}

    response = TestClient(app).get("/refused")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == "urn:remix:problem:unstorable-value"
