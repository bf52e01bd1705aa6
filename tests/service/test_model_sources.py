"""Where a job's model may come from, as the API decides it: `job:<id>[@<step>]` (a checkpoint of one of
the tenant's own jobs, pinned to a step when stored) and the operator's REMIX_MODEL_DIRS (local model
directories any tenant may name, checked after resolving symlinks and '..'). The worker's side, loading
those weights, is in tests/reliability/test_models_from_earlier_jobs.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session

from service.main import create_app
from service.models import Checkpoint
from service.settings import Settings

FIELD = "config.model.name_or_path"


def _job_with_checkpoints(client: TestClient, db: Session, caller: Caller, steps: list[int]) -> str:
    job_id = submit(client, caller, {"total_steps": 5, "rollout": {"max_new_tokens": 16}})["id"]
    for step in steps:
        db.add(Checkpoint(job_id=uuid.UUID(job_id), step=step, uri=f"jobs/{job_id}/checkpoints/step-{step:06d}/"))
    db.commit()
    return job_id


def _post(client: TestClient, caller: Caller, model: str):  # noqa: ANN202 - a TestClient response
    return client.post("/v1/jobs", json={"base_model": model, "config": {}}, headers=caller.headers)


def test_a_checkpoint_of_the_tenant_s_own_job_is_accepted_and_stored_with_its_step(
    client: TestClient, db: Session, alice: Caller
) -> None:
    first = _job_with_checkpoints(client, db, alice, [2, 4])
    latest = submit(client, alice, base_model=f"job:{first}")
    assert latest["base_model"] == latest["config"]["model"]["name_or_path"] == f"job:{first}@4"  # the newest
    chosen = submit(client, alice, config={"model": {"name_or_path": f"job:{first.upper()}@2"}})
    assert chosen["config"]["model"]["name_or_path"] == f"job:{first}@2"
    # a job started from a checkpoint is a source in turn (the pre-flight follows the chain to the base model)
    second = latest["id"]
    db.add(Checkpoint(job_id=uuid.UUID(second), step=1, uri=f"jobs/{second}/checkpoints/step-000001/"))
    db.commit()
    assert submit(client, alice, base_model=f"job:{second}")["base_model"] == f"job:{second}@1"


def test_a_missing_checkpoint_or_job_is_a_422_naming_the_model_field(
    client: TestClient, db: Session, alice: Caller
) -> None:
    first = _job_with_checkpoints(client, db, alice, [2, 4])
    problem = assert_problem(_post(client, alice, f"job:{first}@3"), 422, FIELD)
    assert problem["errors"] == [
        {"field": FIELD, "message": f"job {first} has no checkpoint at step 3; it has steps 2, 4"}
    ]
    fresh = _job_with_checkpoints(client, db, alice, [])
    problem = assert_problem(_post(client, alice, f"job:{fresh}"), 422, FIELD)
    assert "has no checkpoint yet" in problem["errors"][0]["message"]
    for malformed in ("job:", "job:123", f"job:{first}@x", f"job:{first}@-1"):
        problem = assert_problem(_post(client, alice, malformed), 422, FIELD)
        assert [e["field"] for e in problem["errors"]] == [FIELD]


def test_another_tenant_s_job_is_refused_exactly_like_a_job_that_does_not_exist(
    client: TestClient, db: Session, alice: Caller, bob: Caller
) -> None:
    alices = _job_with_checkpoints(client, db, alice, [2])
    nobody = str(uuid.uuid4())
    for job_id in (alices, nobody):
        problem = assert_problem(_post(client, bob, f"job:{job_id}@2"), 422, FIELD)
        assert problem["errors"] == [{"field": FIELD, "message": f"job {job_id} does not exist"}]


@pytest.fixture
def model_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed models root with a model inside, a folder outside it, and a link from inside to outside."""
    allowed, outside = tmp_path / "models", tmp_path / "private"
    for folder in (allowed / "qwen", outside / "secret"):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    (allowed / "escape").symlink_to(outside / "secret", target_is_directory=True)
    (tmp_path / "link-to-models").symlink_to(allowed, target_is_directory=True)
    return allowed, outside


@pytest.fixture
def dirs_client(settings: Settings, model_dirs: tuple[Path, Path]) -> TestClient:
    allowed, _ = model_dirs
    return TestClient(create_app(settings.model_copy(update={"model_dirs": f"/nonexistent{os.pathsep}{allowed}"})))


def test_a_directory_inside_remix_model_dirs_is_open_to_every_tenant(
    dirs_client: TestClient, alice: Caller, model_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    allowed, _ = model_dirs
    for name, stored in (
        (str(allowed), allowed),  # the allowed directory itself
        (str(allowed / "qwen"), allowed / "qwen"),  # or one inside it
        (f"{allowed}/./qwen//", allowed / "qwen"),
        (str(tmp_path / "link-to-models" / "qwen"), allowed / "qwen"),  # a link into it: stored resolved
        (str(allowed / "not-there-yet"), allowed / "not-there-yet"),  # the worker loads (or fails) later
    ):
        job = submit(dirs_client, alice, base_model=name)
        assert job["config"]["model"]["name_or_path"] == str(stored)


def test_local_paths_outside_remix_model_dirs_stay_admin_only(
    dirs_client: TestClient, client: TestClient, alice: Caller, admin: Caller, model_dirs: tuple[Path, Path]
) -> None:
    allowed, outside = model_dirs
    for name in (
        str(outside / "secret"),
        f"{allowed}/../private/secret",  # '..' out of it
        str(allowed / "escape"),  # a link inside it pointing out of it
        f"{allowed}-evil/qwen",  # a sibling sharing its prefix
        "./models/qwen",  # relative: it would resolve against the worker's directory
        "~/models/qwen",
    ):
        assert_problem(_post(dirs_client, alice, name), 422, FIELD)
    # without REMIX_MODEL_DIRS no local directory is open to tenants
    assert_problem(_post(client, alice, str(allowed / "qwen")), 422, "REMIX_MODEL_DIRS")
    # admin keys may name any local path, stored as given
    assert submit(dirs_client, admin, base_model=str(outside / "secret"))["base_model"] == str(outside / "secret")


def test_remix_model_dirs_takes_absolute_directories_only() -> None:
    with pytest.raises(ValueError, match="absolute directories only"):
        Settings(model_dirs=f"/models{os.pathsep}relative/models")
    assert Settings(model_dirs=f"/models{os.pathsep}{os.pathsep}/data/models").model_dir_list == (
        "/models",
        "/data/models",
    )
