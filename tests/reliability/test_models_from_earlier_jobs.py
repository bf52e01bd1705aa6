"""Where a job's weights come from, through `worker.job_runner.run_job` on jobs submitted over the API:
a job of the same tenant starts from a checkpoint of an earlier one (`job:<id>` and `job:<id>@<step>`)
with exactly that checkpoint's weights, another tenant cannot name it, and a worker's `HF_TOKEN` (for
gated hub models) reaches the model loader but never the sandboxed python reward.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from reliability_testing import Caller, assert_problem
from sqlalchemy import select
from sqlalchemy.orm import Session
from testing_support import tiny_job_config
from transformers import AutoModelForCausalLM

from remix_engine import modeling
from remix_engine import trainer as trainer_module
from service.artifacts import LocalArtifactStore
from service.models import Checkpoint, Job, JobEvent, JobMetric
from service.settings import Settings
from worker.job_runner import run_job

pytestmark = pytest.mark.slow

SMALL = {"data": {"eval_size": 8}, "rollout": {"prompts_per_step": 4, "group_size": 2, "max_new_tokens": 16}}


def _small_job(**overrides: Any) -> dict[str, Any]:
    return tiny_job_config(**{**SMALL, "algorithm": {"minibatch_size": 8}, "log_completions": 0, **overrides})


def _submit(client: TestClient, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(name_or_path, state dict) of every policy the trainer loads, as loaded."""
    seen: list[tuple[str, dict[str, torch.Tensor]]] = []
    real = trainer_module.load_policy

    def spy(model_cfg: Any, device: Any = "cpu") -> Any:
        model, tokenizer = real(model_cfg, device)
        seen.append((model_cfg.name_or_path, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return model, tokenizer

    monkeypatch.setattr(trainer_module, "load_policy", spy)
    return seen


def _checkpoint_weights(settings: Settings, db: Session, job_id: uuid.UUID, step: int) -> dict[str, torch.Tensor]:
    uri = db.scalars(select(Checkpoint.uri).where(Checkpoint.job_id == job_id, Checkpoint.step == step)).one()
    folder = LocalArtifactStore(settings.artifacts_dir).path_for(uri)
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_job_starts_from_the_checkpoint_of_an_earlier_job_of_its_tenant(
    client: TestClient, alice: Caller, bob: Caller, settings: Settings, db: Session, loaded: list
) -> None:
    # given a finished job of alice's with checkpoints at steps 1 and 2
    first = _submit(client, alice, {"config": _small_job(total_steps=2, checkpoint_every=1)})
    assert run_job(first["id"], settings=settings) == "succeeded"
    first_id = uuid.UUID(first["id"])
    db.rollback()
    assert sorted(db.scalars(select(Checkpoint.step).where(Checkpoint.job_id == first_id))) == [1, 2]
    step_1, step_2 = (_checkpoint_weights(settings, db, first_id, step) for step in (1, 2))
    assert not _same(step_1, step_2)

    # when alice starts two jobs from it, from its newest checkpoint and from step 1
    for name, expected_step, expected in ((f"job:{first_id}", 2, step_2), (f"job:{first_id}@1", 1, step_1)):
        job = _submit(client, alice, {"config": _small_job(total_steps=1, model={"name_or_path": name})})
        assert job["config"]["model"]["name_or_path"] == f"job:{first_id}@{expected_step}"  # pinned when stored
        loaded.clear()
        assert run_job(job["id"], settings=settings) == "succeeded"

        # then the worker loaded that checkpoint's folder, and its initial weights are the checkpoint's
        (path, weights), *_ = loaded
        assert Path(path).name == f"step-{expected_step:06d}" and str(first_id) in path
        assert _same(weights, expected)
        db.rollback()
        row = db.get_one(Job, uuid.UUID(job["id"]), populate_existing=True)
        assert (row.status, row.base_model) == ("succeeded", f"job:{first_id}@{expected_step}")

    # and bob cannot name alice's job: the same 422 as for a job that does not exist
    for job_id in (first_id, uuid.uuid4()):
        response = client.post("/v1/jobs", json={"base_model": f"job:{job_id}"}, headers=bob.headers)
        problem = assert_problem(response, 422, "config.model.name_or_path")
        assert problem["errors"][0]["message"] == f"job {job_id} does not exist"


def test_a_checkpoint_pruned_before_the_job_starts_fails_it_naming_the_model(
    client: TestClient, alice: Caller, settings: Settings, db: Session
) -> None:
    first = _submit(client, alice, {"config": _small_job(total_steps=1)})
    assert run_job(first["id"], settings=settings) == "succeeded"
    source = {"name_or_path": f"job:{first['id']}@1"}
    job = _submit(client, alice, {"config": _small_job(total_steps=1, model=source)})
    db.rollback()
    db.query(Checkpoint).filter(Checkpoint.job_id == uuid.UUID(first["id"])).delete()  # as retention would
    db.commit()
    assert run_job(job["id"], settings=settings) == "failed"
    db.rollback()
    error = db.get_one(Job, uuid.UUID(job["id"]), populate_existing=True).error
    assert error.startswith(f"ModelSourceError: cannot load model 'job:{first['id']}@1'"), error


# 1.0 if the worker's hub token is visible anywhere in the reward's environment; 0.5 (the environment is
# readable, LANG is set in the jail) otherwise.
TOKEN = "hf_remixProbe0123456789abcdefXYZ"
TOKEN_PROBE = f"""
def reward(completion, answer):
    import os
    if any({TOKEN!r} in value for value in os.environ.values()):
        return 1.0
    return 0.5 if "LANG" in os.environ else 0.0
"""


def test_hf_token_reaches_the_model_loader_but_never_the_sandboxed_reward(
    client: TestClient, alice: Caller, settings: Settings, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a worker with a Hugging Face token in its environment (for gated hub models)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    seen_by_loader: list[str | None] = []
    real = modeling._from_pretrained

    def spy(source: str, model_cfg: Any, *, local_only: bool) -> Any:
        from huggingface_hub import get_token  # what transformers and huggingface_hub authenticate with

        seen_by_loader.append(get_token())
        return real(source, model_cfg, local_only=local_only)

    monkeypatch.setattr(modeling, "_from_pretrained", spy)
    config = _small_job(total_steps=1, log_completions=8)
    config["reward"] = {"functions": [{"name": "python", "kwargs": {"code": TOKEN_PROBE}}]}

    # when it runs a job whose python reward looks for the token
    job = _submit(client, alice, {"config": config})
    assert run_job(job["id"], settings=settings) == "succeeded"

    # then the loader saw the token, and the reward never did (in the scoring child or its sandbox)
    assert seen_by_loader and set(seen_by_loader) == {TOKEN}
    db.rollback()
    job_id = uuid.UUID(job["id"])
    metrics = db.scalars(select(JobMetric.metrics).where(JobMetric.job_id == job_id)).one()
    assert (metrics["reward_mean"], metrics["reward_errors"]) == (0.5, 0)
    samples = next(e for e in db.scalars(select(JobEvent).where(JobEvent.job_id == job_id)) if e.kind == "samples")
    assert {s["reward"] for s in samples.payload["samples"]} == {0.5}
