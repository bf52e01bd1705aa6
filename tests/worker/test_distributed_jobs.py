"""Multi-process jobs (`distributed.num_processes > 1`): the worker claims the job once, launches its
ranks under torchrun (gloo on CPU), and rank 0 streams the job into the database like the in-process
runner. Real Celery workers, Postgres and Redis; the builtin tiny model.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from worker_testing import job_events, job_row, send_train_job, tiny_job_config, wait_for

from service.artifacts import checkpoint_key
from service.lifecycle import CancelOutcome, request_cancel
from service.models import Checkpoint, Job, JobAttempt, JobMetric, utcnow
from service.settings import Settings
from worker.distributed_entry import Lifeline, pid_alive
from worker.distributed_launch import DistributedTrainingError, attempt_dir, launch_device, settings_env
from worker.job_runner import run_job

JOB_TIMEOUT = 240


def two_process_config(**overrides):
    config = tiny_job_config(distributed={"num_processes": 2}, **overrides)
    config["data"]["eval_size"] = 16
    return config


def _rank_pids(settings: Settings, job_id, attempt: int = 1) -> dict[int, tuple[int, int]]:
    """rank -> (pid, torchrun pid), from the pid files the ranks write."""
    folder = attempt_dir(Path(settings.artifacts_dir) / "jobs" / str(job_id), attempt)
    pids = {}
    for path in folder.glob("rank-*.pid"):
        pid, parent = path.read_text().split()
        pids[int(path.stem.removeprefix("rank-"))] = (int(pid), int(parent))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_job_trains_through_the_worker(sessions, make_job, settings, start_worker, strategy):
    # given a job asking for two training processes, sent to a real worker
    total = 3
    config = two_process_config(total_steps=total, checkpoint_every=2)
    config["distributed"]["strategy"] = strategy
    job = make_job(config=config)
    worker = start_worker(strategy)
    send_train_job(settings, job)

    # when the worker has run it
    done = wait_for(
        lambda: (row := job_row(sessions, job.id)).status in {"succeeded", "failed"} and row,
        timeout=JOB_TIMEOUT,
        what="the two-process job to finish",
        on_timeout=worker.log_text,
    )

    # then it succeeded with exactly one metric row per step, written by rank 0 only
    assert done.status == "succeeded", f"{done.error}\n{worker.log_text()[-4000:]}"
    assert (done.current_step, done.attempts) == (total, 1)
    with sessions() as session:
        metrics = session.execute(select(JobMetric.step, JobMetric.metrics).where(JobMetric.job_id == job.id)).all()
        checkpoints = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step)
        ).all()
        attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).all()
    assert sorted(step for step, _ in metrics) == [1, 2, 3]
    # the step's batch is the whole one: 8 prompt groups of 4, sampled half by each rank
    assert all(m["fresh_samples"] + m["replayed_samples"] == 32 for _, m in metrics)
    assert [c.step for c in checkpoints] == [2, 3]
    assert [a.outcome for a in attempts] == ["succeeded"]

    # and two ranks really ran: rank 0 announced a world of 2, and each rank left its own pid
    events = job_events(sessions, job.id)
    announced = [e for e in events if e.kind == "distributed"]
    assert len(announced) == 1
    assert announced[0].payload == {
        "world_size": 2,
        "num_nodes": 1,
        "strategy": strategy,
        "backend": "gloo",
        "device": "cpu",
        "attempt": 1,
    }
    kinds = [e.kind for e in events]
    assert kinds.count("evaluation") == 2 and kinds[-1] == "succeeded"  # evaluated by rank 0 alone
    pids = _rank_pids(settings, job.id)
    assert sorted(pids) == [0, 1]
    assert pids[0][0] != pids[1][0] and pids[0][1] == pids[1][1]  # two processes under one torchrun

    # and the final checkpoint is an ordinary transformers folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(settings.artifacts_dir) / checkpoints[-1].uri
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = AutoTokenizer.from_pretrained(folder)("12+34=", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[:2] == ids.shape


@pytest.mark.slow
def test_cancelling_an_fsdp_job_with_a_checkpoint_saves_it_on_every_rank(sessions, make_job, settings, start_worker):
    # given a two-process FSDP job, training (saving a checkpoint gathers shards from both ranks)
    config = two_process_config(total_steps=200, checkpoint_every=100)
    config["distributed"]["strategy"] = "fsdp"
    job = make_job(config=config)
    worker = start_worker("fsdp-cancel")
    send_train_job(settings, job)
    wait_for(
        lambda: job_row(sessions, job.id).current_step >= 2,
        timeout=JOB_TIMEOUT,
        what="two trained steps",
        on_timeout=worker.log_text,
    )

    # when it is cancelled with `?checkpoint=true`
    with sessions() as session:
        assert request_cancel(session, session.get_one(Job, job.id), checkpoint=True) == CancelOutcome.requested

    # then both ranks stop between steps, save the step reached together, and the job ends cancelled
    done = wait_for(
        lambda: (row := job_row(sessions, job.id)).status in {"cancelled", "failed"} and row,
        timeout=120,
        what="the job to stop",
        on_timeout=worker.log_text,
    )
    assert done.status == "cancelled", f"{done.error}\n{worker.log_text()[-4000:]}"
    assert 2 <= done.current_step < 200
    with sessions() as session:
        steps = session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job.id)).all()
    assert steps == [done.current_step]
    assert done.summary["last_checkpoint"] == checkpoint_key(job.id, done.current_step)


@pytest.mark.slow
def test_killed_worker_leaves_no_orphan_ranks_and_the_job_resumes(sessions, make_job, settings, start_worker):
    # given a two-process job whose ranks are training, past a checkpoint
    total = 12
    job = make_job(config=two_process_config(total_steps=total, checkpoint_every=2))
    first = start_worker("doomed")
    send_train_job(settings, job)

    def checkpointed_mid_job() -> bool:
        with sessions() as session:
            checkpointed = session.scalar(select(Checkpoint.id).where(Checkpoint.job_id == job.id).limit(1))
        row = job_row(sessions, job.id)
        return bool(checkpointed) and row.current_step >= 3 and row.status == "running"

    wait_for(
        checkpointed_mid_job,
        timeout=JOB_TIMEOUT,
        what="a checkpoint mid-job",
        interval=0.05,
        on_timeout=first.log_text,
    )
    pids = _rank_pids(settings, job.id)
    torchrun = pids[0][1]
    assert sorted(pids) == [0, 1] and all(pid_alive(pid) for pid, _ in pids.values()) and pid_alive(torchrun)

    # when the worker and its pool process die at once (torchrun runs in a process group of its own)
    first.kill()
    killed_at = job_row(sessions, job.id).current_step
    assert killed_at < total, "the job finished before the worker could be killed"

    # then the ranks notice and take torchrun down with them
    wait_for(
        lambda: not any(pid_alive(pid) for pid in [torchrun, *(pid for pid, _ in pids.values())]),
        timeout=20,
        what="the ranks and torchrun to exit",
    )

    # and once the heartbeat is stale a new worker re-queues the job and its ranks resume it
    wait_for(
        lambda: job_row(sessions, job.id).heartbeat_at < utcnow() - timedelta(seconds=settings.stale_after_seconds),
        timeout=30,
        what="the heartbeat to go stale",
    )
    second = start_worker("successor")
    done = wait_for(
        lambda: (row := job_row(sessions, job.id)).status in {"succeeded", "failed"} and row,
        timeout=JOB_TIMEOUT,
        what="the resumed job to finish",
        on_timeout=second.log_text,
    )
    assert done.status == "succeeded", done.error
    assert done.attempts == 2
    with sessions() as session:
        steps = session.scalars(select(JobMetric.step).where(JobMetric.job_id == job.id)).all()
        attempts = session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.attempt)
        ).all()
    assert sorted(steps) == list(range(1, total + 1))  # one row per step, none lost or duplicated
    assert [a.outcome for a in attempts] == ["stalled", "succeeded"]
    assert 2 <= attempts[1].resumed_from_step <= killed_at
    events = job_events(sessions, job.id)
    assert [e.payload["attempt"] for e in events if e.kind == "distributed"] == [1, 2]
    assert "resumed" in [e.kind for e in events]
    assert sorted(_rank_pids(settings, job.id, attempt=2)) == [0, 1]


def test_a_job_asking_for_more_gpus_than_visible_fails_clearly(sessions, make_job, settings):
    job = make_job(config=two_process_config())

    outcome = run_job(str(job.id), settings=settings, sessions=sessions, device="cuda")

    row = job_row(sessions, job.id)
    assert outcome == "failed" and row.status == "failed"
    assert "distributed.num_processes=2 needs one GPU per process, but this worker sees 0" in row.error
    assert _rank_pids(settings, job.id) == {}  # refused before any rank started


def test_launch_device_counts_gpus(monkeypatch):
    import torch

    assert launch_device("cpu", 4) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launch_device(None, 2) == "cuda"
    with pytest.raises(DistributedTrainingError, match="needs one GPU per process, but this worker sees 2"):
        launch_device("cuda", 3)


@pytest.mark.slow
def test_ranks_that_fail_at_start_fail_the_job_with_their_error(sessions, make_job, settings):
    # the vLLM backend needs CUDA and the vllm package: every rank refuses it at start
    job = make_job(config=two_process_config(rollout={"backend": "vllm"}))

    outcome = run_job(str(job.id), settings=settings, sessions=sessions)

    row = job_row(sessions, job.id)
    assert outcome == "failed" and row.status == "failed", row.error
    assert row.error.startswith("DistributedTrainingError: the 2 training processes exited with code 1")
    # both ranks refused, with the same error: reported once
    assert row.error.count("rollout.backend 'vllm' needs a CUDA GPU") == 1
    assert "ranks 0, 1:" in row.error or "ranks 1, 0:" in row.error
    assert str(settings.artifacts_dir) not in row.error  # no worker-local paths in a tenant's job
    kinds = [e.kind for e in job_events(sessions, job.id)]
    assert kinds == ["started", "failed"]


def test_settings_travel_to_the_ranks_as_environment(settings):
    env = settings_env(settings)
    assert env["REMIX_DATABASE_URL"] == settings.database_url
    assert env["REMIX_HEARTBEAT_SECONDS"] == str(settings.heartbeat_seconds)
    assert "REMIX_ARTIFACTS_S3_BUCKET" not in env  # unset stays unset
    assert Settings(**{k.removeprefix("REMIX_").lower(): v for k, v in env.items()}) == settings


def test_lifeline_breaks_when_the_launcher_is_gone():
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert Lifeline(launcher_pid=os.getpid()).broken() is None
    assert "launched the job" in (Lifeline(launcher_pid=gone.pid).broken() or "")
    lifeline = Lifeline(launcher_pid=None)
    lifeline.torchrun_pid = -1  # as if torchrun had been replaced by init
    assert "torchrun" in (lifeline.broken() or "")
    assert not pid_alive(gone.pid) and pid_alive(os.getpid())
