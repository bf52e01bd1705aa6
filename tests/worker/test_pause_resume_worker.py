"""Pause and resume through real processes: a uvicorn API and Celery workers on Postgres + Redis.

A remix-grpo job is paused during its Mix phase (replay buffer filled, reincarnation still ahead), its
worker process is stopped, and a new worker resumes it when the tenant asks. The resumed job must end
exactly as an uninterrupted run of the same config: the same rewards and losses per step, the same
replayed sample counts and phases, and every step recorded once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from worker_testing import ManagedProcess, running_api, tiny_job_config, wait_for

from service.models import Job, JobAttempt, JobEvent
from service.repositories.tenants import create_api_key, get_or_create_tenant
from service.settings import Settings

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 600  # first use builds the tiny model (~90 s) into the shared cache
# A Mix phase of many short steps: the worker polls for a pause once a second, and the pause must land
# inside the Mix phase however fast a step is.
TOTAL_STEPS = 36
REINCARNATION_STEP = 30
# Values that depend on the data, the policy and the replay buffer: equal only if the resumed run
# continued with exactly the state of the pause (timings and throughput are not compared).
COMPARED_FLOATS = ("reward_mean", "reward_std", "accuracy", "loss", "lambda")
COMPARED_EXACTLY = ("phase", "fresh_samples", "replayed_samples", "replay_buffer_size", "replayed_samples_total")


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One artifact store for the module: the API and both workers must see the same files."""
    return Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        heartbeat_seconds=0.5,
        stale_after_seconds=3.0,
        max_attempts=3,
    )


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_api(settings, tmp_path_factory.mktemp("api") / "api.log") as url:
        yield url


@pytest.fixture
def client(api_url: str, sessions) -> Iterator[httpx.Client]:
    with sessions() as session:  # the repository functions commit
        _row, key = create_api_key(session, get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}"))
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield http


def _submit(client: httpx.Client, config: dict[str, Any], name: str) -> str:
    response = client.post("/v1/jobs", json={"name": name, "config": config})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _job(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get_one(Job, uuid.UUID(job_id))


def _wait_status(sessions, job_id: str, statuses: set[str], worker: ManagedProcess) -> Job:
    def reached() -> Job | None:
        job = _job(sessions, job_id)
        return job if job.status in statuses else None

    return wait_for(reached, timeout=JOB_TIMEOUT, what=f"job {job_id} to become {statuses}", on_timeout=worker.log_text)


def _metrics(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/metrics")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_a_job_paused_in_the_mix_phase_resumes_on_a_new_worker_as_if_never_paused(client, sessions, start_worker):
    config = tiny_job_config(
        total_steps=TOTAL_STEPS, checkpoint_every=10, algorithm={"reincarnation_step": REINCARNATION_STEP}
    )
    # given a job being trained by a worker, past its first steps of the Mix phase
    first = start_worker("before-pause")
    job_id = _submit(client, config, "paused")
    wait_for(
        lambda: _job(sessions, job_id).current_step >= 2,
        timeout=JOB_TIMEOUT,
        what="two trained steps",
        interval=0.05,
        on_timeout=first.log_text,
    )

    # when the tenant pauses it
    response = client.post(f"/v1/jobs/{job_id}/pause")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pausing"

    # then the worker stops between steps with a checkpoint of the step reached, and lets go of the job
    paused = _wait_status(sessions, job_id, {"paused", "failed", "succeeded"}, first)
    assert paused.status == "paused", paused.error
    paused_at = paused.current_step
    assert 2 <= paused_at < REINCARNATION_STEP, "the pause landed outside the Mix phase"
    assert (paused.worker_id, paused.heartbeat_at) == (None, None)
    checkpoints = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]]
    assert paused_at in checkpoints
    before = _metrics(client, job_id)
    assert [m["step"] for m in before] == list(range(1, paused_at + 1))
    assert {m["metrics"]["phase"] for m in before} == {"mix"}
    assert before[-1]["metrics"]["replay_buffer_size"] > 0  # the pause has replay state to keep

    # and, with that worker process gone, a new worker resumes it when asked
    first.stop()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "paused"  # nobody resumes it unasked
    second = start_worker("after-pause")
    response = client.post(f"/v1/jobs/{job_id}/resume")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    resumed = _wait_status(sessions, job_id, {"succeeded", "failed"}, second)
    assert resumed.status == "succeeded", resumed.error

    # and an uninterrupted run of the same config, on the same worker, is the reference
    reference_id = _submit(client, config, "reference")
    reference = _wait_status(sessions, reference_id, {"succeeded", "failed"}, second)
    assert reference.status == "succeeded", reference.error

    # then every step is recorded exactly once, with the values of the uninterrupted run
    after, expected = _metrics(client, job_id), _metrics(client, reference_id)
    assert [m["step"] for m in after] == list(range(1, TOTAL_STEPS + 1))
    assert [m["step"] for m in expected] == list(range(1, TOTAL_STEPS + 1))
    for got, want in zip(after, expected, strict=True):
        for key in COMPARED_EXACTLY:
            assert got["metrics"][key] == want["metrics"][key], (got["step"], key)
        for key in COMPARED_FLOATS:
            if key in want["metrics"]:
                assert got["metrics"][key] == pytest.approx(want["metrics"][key], abs=1e-6), (got["step"], key)
    assert [m["metrics"]["phase"] for m in after] == ["mix"] * REINCARNATION_STEP + ["on-policy"] * (
        TOTAL_STEPS - REINCARNATION_STEP
    )
    assert any(m["metrics"]["replayed_samples"] > 0 for m in after[paused_at:REINCARNATION_STEP])
    # the steps before the pause were not trained again: their rows are the first attempt's
    assert [m["created_at"] for m in after[:paused_at]] == [m["created_at"] for m in before]

    # and the attempts and events tell the story: paused, resumed from the pause's checkpoint, finished
    with sessions() as session:
        attempts = list(
            session.scalars(select(JobAttempt).where(JobAttempt.job_id == resumed.id).order_by(JobAttempt.attempt))
        )
        kinds = list(session.scalars(select(JobEvent.kind).where(JobEvent.job_id == resumed.id).order_by(JobEvent.id)))
    assert [a.outcome for a in attempts] == ["paused", "succeeded"]
    assert attempts[1].resumed_from_step == paused_at
    assert attempts[0].worker_id != attempts[1].worker_id
    order = [kinds.index(kind) for kind in ("pause_requested", "paused", "resume_requested", "resumed", "succeeded")]
    assert order == sorted(order)
    assert kinds.count("reincarnated") == 1
