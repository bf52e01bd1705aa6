"""Failures inside a running job, through `worker.job_runner.run_job` (the body of the Celery task) on
jobs submitted over the API: an unknown hub model fails the job with a reason that names it, and a
user reward that crashes or hangs fails only its own samples, counted in the step's `reward_errors`,
while the job trains on and succeeds.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reliability_testing import Caller
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Checkpoint, Job, JobAttempt, JobEvent, JobMetric
from service.settings import Settings
from worker.job_runner import run_job

pytestmark = pytest.mark.slow

UNKNOWN_MODEL = "no-such-org/no-such-model"

# Crashes the reward process for answers = 1 (mod 4), hangs past the wall clock for answers = 3 (mod 4).
FLAKY_REWARD = """
def reward(completion, answer):
    n = int(answer)
    if n % 4 == 1:
        import os
        os._exit(3)
    if n % 4 == 3:
        import time
        time.sleep(3600)
    return 1.0
"""


def _submit(client: TestClient, caller: Caller, body: dict[str, Any]) -> uuid.UUID:
    response = client.post("/v1/jobs", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def _events(db: Session, job_id: uuid.UUID) -> list[JobEvent]:
    return list(db.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_unknown_hub_model_fails_the_job_clearly(
    client: TestClient, alice: Caller, settings: Settings, db: Session
) -> None:
    # given a well-formed hub id that exists nowhere (the API cannot rule it out without the hub)
    job_id = _submit(client, alice, {"base_model": UNKNOWN_MODEL, "config": {"total_steps": 2}})

    # when a worker runs it
    assert run_job(str(job_id), settings=settings) == "failed"

    # then the job failed at once, on its only attempt, saying which model and why
    db.rollback()
    job = db.get_one(Job, job_id, populate_existing=True)
    assert (job.status, job.attempts, job.current_step) == ("failed", 1, 0)
    assert job.finished_at is not None
    assert job.error.startswith(f"ModelLoadError: cannot load model {UNKNOWN_MODEL!r}"), job.error
    assert "Hugging Face Hub" in job.error  # not found there, or the hub is unreachable
    attempt = db.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).one()
    assert (attempt.outcome, attempt.error) == ("failed", job.error)
    events = _events(db, job_id)
    assert [e.kind for e in events][-2:] == ["started", "failed"]
    assert events[-1].message == job.error
    assert not db.scalars(select(JobMetric.step).where(JobMetric.job_id == job_id)).all()
    assert not db.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).all()
    shown = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert (shown["status"], shown["error"]) == ("failed", job.error)


def test_a_crashing_or_hanging_reward_fails_only_its_samples(
    client: TestClient, alice: Caller, settings: Settings, db: Session
) -> None:
    # given a job whose user reward crashes on some answers and hangs on others
    config = {
        "model": {"name_or_path": "builtin:tiny-arith"},
        "data": {"train_path": "builtin:addition", "eval_size": 8},
        "rollout": {"prompts_per_step": 4, "group_size": 2, "max_new_tokens": 8},
        "algorithm": {"name": "remix-grpo", "minibatch_size": 8},
        "reward": {
            "functions": [
                {"name": "math_verify"},
                {"name": "python", "weight": 0.5, "kwargs": {"code": FLAKY_REWARD, "timeout_s": 0.5}},
            ]
        },
        "total_steps": 1,
        "checkpoint_every": 1,
        "log_completions": 8,
    }
    job_id = _submit(client, alice, {"name": "flaky-reward", "config": config})

    # when a worker trains it
    assert run_job(str(job_id), settings=settings) == "succeeded"

    # then the job succeeded and the step's metrics count exactly the samples whose reward failed
    db.rollback()
    job = db.get_one(Job, job_id, populate_existing=True)
    assert (job.status, job.current_step, job.error) == ("succeeded", 1, None)
    metrics = db.scalars(select(JobMetric).where(JobMetric.job_id == job_id)).one().metrics
    samples = next(e for e in _events(db, job_id) if e.kind == "samples").payload["samples"]
    assert len(samples) == metrics["fresh_samples"]  # every sample of the step was logged
    answers = [int(s["answer"]) for s in samples]
    crashed = [n % 4 == 1 for n in answers]
    hung = [n % 4 == 3 for n in answers]
    assert any(crashed) and any(hung), answers  # both kinds of failure really happened
    failed = [c or h for c, h in zip(crashed, hung, strict=True)]
    assert metrics["reward_errors"] == sum(failed) < len(samples)
    # A failed sample scores 0 from the python reward; the others got its 1.0 (weight 0.5) on top of
    # their math_verify score (0 or 1).
    for sample, bad in zip(samples, failed, strict=True):
        python_part = sample["reward"] % 1.0
        assert python_part == (0.0 if bad else 0.5), (sample, bad)


def test_a_reward_that_cannot_finish_fails_the_job_clearly_while_the_heartbeat_goes_on(
    client: TestClient, alice: Caller, settings: Settings, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a tenant's dataset whose reference answer math-verify would evaluate for ever (9^387420489
    # has 370 million digits; sympy computes it holding the GIL) and a 3 s budget for scoring a batch
    rows = "".join(f'{{"prompt": "{i}+{i}=", "answer": "9^{{9^{{9}}}}"}}\n' for i in range(8))
    upload = client.post("/v1/datasets", files={"file": ("bomb.jsonl", rows.encode())}, headers=alice.headers)
    assert upload.status_code == 201, upload.text
    config = {
        "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 16},  # room for a whole box
        "data": {"eval_size": 2},
        "algorithm": {"name": "grpo", "minibatch_size": 4},
        "total_steps": 2,
    }
    job_id = _submit(client, alice, {"dataset_id": upload.json()["id"], "config": config})
    monkeypatch.setenv("REMIX_REWARD_TIMEOUT_SECONDS", "3")
    beating = settings.model_copy(update={"heartbeat_seconds": 0.2})

    # when a worker runs it, the heartbeat is watched from another connection
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(run_job(str(job_id), settings=beating)))
    runner.start()
    beats: set[object] = set()
    while runner.is_alive():
        db.rollback()
        job = db.get_one(Job, job_id, populate_existing=True)
        if job.status == "running" and job.heartbeat_at is not None:
            beats.add(job.heartbeat_at)
        time.sleep(0.1)
    runner.join()

    # then the job failed on its first attempt with a reason naming the limit, and the worker is free
    assert outcome == ["failed"]
    db.rollback()
    job = db.get_one(Job, job_id, populate_existing=True)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "RewardScoringError: reward scoring of 2 completions took longer than its limit of 3s" in job.error
    # and the heartbeat kept beating while the scoring child computed (about 15 beats in 3 s)
    assert len(beats) >= 8, sorted(beats)
