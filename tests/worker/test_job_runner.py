"""Claiming, guarded writes, cancellation polling, heartbeats and retries of a job's attempt,
against the real Postgres test database (no trainer involved)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import sessionmaker
from worker_testing import tiny_job_config

from service.artifacts import LocalArtifactStore
from service.lifecycle import JobWriter, LeaseLost, claim_job, jsonable
from service.models import (
    Checkpoint,
    Dataset,
    Job,
    JobAttempt,
    JobEvent,
    JobMetric,
    JobStatus,
    JobUsage,
    Tenant,
    utcnow,
)
from worker.job_inputs import ModelSourceError, job_output_dir, resolve_config
from worker.job_runner import DbCallbacks, Heartbeat, run_job, worker_identity


def _job(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def _claimed_writer(sessions, make_job, **job_overrides) -> JobWriter:
    job = make_job(**job_overrides)
    claim = claim_job(sessions, job.id, worker_id="test-host-1")
    assert claim is not None
    return JobWriter(sessions, job.id, claim.attempt)


def test_second_claim_and_second_run_are_no_ops(sessions, make_job, settings):
    # given a queued job
    job = make_job()

    # when it is claimed twice, then delivered again to run_job
    first = claim_job(sessions, job.id, worker_id="host-a-1", celery_task_id="task-1")
    second = claim_job(sessions, job.id, worker_id="host-b-2", celery_task_id="task-2")
    outcome = run_job(str(job.id), settings=settings, sessions=sessions, celery_task_id="task-3")

    # then only the first claim took it
    assert first is not None and first.attempt == 1
    assert second is None
    assert outcome == "skipped"
    row = _job(sessions, job.id)
    assert (row.status, row.attempts, row.worker_id) == ("running", 1, "host-a-1")
    assert row.started_at is not None and row.heartbeat_at is not None
    with sessions() as session:
        attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).all()
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
    assert [(a.attempt, a.worker_id, a.celery_task_id) for a in attempts] == [(1, "host-a-1", "task-1")]
    assert kinds == ["started"]


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "cancelling"])
def test_jobs_that_are_not_queued_are_left_alone(sessions, make_job, settings, status):
    job = make_job(status=status)

    assert run_job(str(job.id), settings=settings, sessions=sessions) == "skipped"

    row = _job(sessions, job.id)
    assert (row.status, row.attempts, row.worker_id) == (status, 0, None)


def test_a_job_past_its_tenants_running_limit_is_deferred_and_stays_queued(sessions, make_job, settings):
    # given a tenant that already runs one job, and a second queued job of the same tenant
    running = make_job(status="running")
    with sessions.begin() as session:
        queued = Job(tenant_id=running.tenant_id, base_model=running.base_model, config=running.config, total_steps=4)
        session.add(queued)
    limited = settings.model_copy(update={"default_max_running_jobs": 1})

    # when a worker is handed the second job
    outcome = run_job(str(queued.id), settings=limited, sessions=sessions, celery_task_id="task-q")

    # then it is not claimed: the task is to be retried later
    assert outcome == "deferred"
    row = _job(sessions, queued.id)
    assert (row.status, row.attempts, row.worker_id) == ("queued", 0, None)


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_unknown_or_malformed_ids_are_skipped(sessions, settings, job_id):
    assert run_job(job_id, settings=settings, sessions=sessions) == "skipped"


def test_worker_identity_names_host_and_process():
    assert worker_identity() == f"{socket.gethostname()}-{os.getpid()}"


def test_metrics_are_upserted_by_step(sessions, make_job):
    writer = _claimed_writer(sessions, make_job)

    writer.record_step(1, {"loss": 1.0, "phase": "mix"})
    writer.record_step(2, {"loss": 0.5})
    writer.record_step(1, {"loss": 0.25, "nan": float("nan")})  # step 1 re-run after a crash

    with sessions() as session:
        rows = session.execute(
            select(JobMetric.step, JobMetric.metrics).where(JobMetric.job_id == writer.job_id).order_by(JobMetric.step)
        ).all()
    assert [(r.step, r.metrics) for r in rows] == [(1, {"loss": 0.25, "nan": None}), (2, {"loss": 0.5})]
    assert _job(sessions, writer.job_id).current_step == 1  # the last reported step


def test_resume_discards_metrics_after_the_checkpoint(sessions, make_job):
    writer = _claimed_writer(sessions, make_job)
    for step in (1, 2, 3):
        writer.record_step(step, {"loss": float(step)})

    dropped = writer.prepare_resume(2)

    with sessions() as session:
        steps = session.scalars(select(JobMetric.step).where(JobMetric.job_id == writer.job_id)).all()
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == writer.job_id)).one()
    assert dropped == 1
    assert sorted(steps) == [1, 2]
    assert attempt.resumed_from_step == 2
    assert _job(sessions, writer.job_id).current_step == 2


def test_a_re_run_step_replaces_its_per_step_events_and_lifecycle_events_accumulate(sessions, make_job):
    # given attempt 1 wrote step 3's samples and evaluation, then crashed before checkpointing step 3
    writer = _claimed_writer(sessions, make_job)
    writer.add_event("samples", 3, "1 sampled completions", {"samples": [{"completion": "first try"}]})
    writer.add_event("evaluation", 3, "greedy accuracy 0.100", {"accuracy": 0.1})

    # when the resumed attempt trains step 3 again and goes on
    writer.add_event("resumed", 2, "resumed from checkpoint at step 2", {})
    writer.add_event("samples", 3, "1 sampled completions", {"samples": [{"completion": "second try"}]})
    writer.add_event("evaluation", 3, "greedy accuracy 0.200", {"accuracy": 0.2})
    writer.add_event("samples", 4, "1 sampled completions", {"samples": []})
    writer.add_event("resumed", 2, "resumed from checkpoint at step 2", {})

    # then step 3 has one samples and one evaluation event, with the re-run's content, under the first
    # ids (a stream follower past them is not sent them again); lifecycle events are all kept
    with sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == writer.job_id).order_by(JobEvent.id)).all()
    assert [(e.kind, e.step) for e in events] == [
        ("started", 0),
        ("samples", 3),
        ("evaluation", 3),
        ("resumed", 2),
        ("samples", 4),
        ("resumed", 2),
    ]
    assert events[1].payload == {"samples": [{"completion": "second try"}]}
    assert (events[2].message, events[2].payload) == ("greedy accuracy 0.200", {"accuracy": 0.2})


def test_writes_of_an_attempt_that_lost_the_job_are_refused(sessions, make_job):
    # given attempt 1 presumed dead: the job was re-queued and claimed again by attempt 2
    old = _claimed_writer(sessions, make_job)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == old.job_id).values(status="queued"))
    new_claim = claim_job(sessions, old.job_id, worker_id="test-host-2")
    assert new_claim is not None and new_claim.attempt == 2

    # when the old attempt wakes up and reports a step
    with pytest.raises(LeaseLost):
        old.record_step(5, {"loss": 9.0})

    # then nothing it wrote survives and it knows it lost the job
    assert old.lost.is_set()
    with sessions() as session:
        assert session.scalars(select(JobMetric).where(JobMetric.job_id == old.job_id)).all() == []
    assert _job(sessions, old.job_id).current_step == 0


def test_finish_sets_the_outcome_on_job_attempt_and_events(sessions, make_job):
    writer = _claimed_writer(sessions, make_job)

    writer.finish(JobStatus.succeeded, step=4, message="done", summary={"accuracy_after": 0.5})

    row = _job(sessions, writer.job_id)
    assert (row.status, row.current_step, row.summary, row.error) == (
        "succeeded",
        4,
        {"accuracy_after": 0.5},
        None,
    )
    assert row.finished_at is not None
    with sessions() as session:
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == writer.job_id)).one()
        last_event = session.scalars(
            select(JobEvent).where(JobEvent.job_id == writer.job_id).order_by(JobEvent.id.desc())
        ).first()
    assert attempt.outcome == "succeeded" and attempt.ended_at is not None
    assert (last_event.kind, last_event.step, last_event.message) == ("succeeded", 4, "done")
    with pytest.raises(LeaseLost):  # a finished job accepts no more writes
        writer.record_step(5, {})


def test_should_stop_reads_cancel_requests_at_most_once_per_interval(sessions, make_job, tmp_path):
    writer = _claimed_writer(sessions, make_job)
    store = LocalArtifactStore(tmp_path)
    throttled = DbCallbacks(writer, store, upload_checkpoints=False, poll_interval=3600)
    eager = DbCallbacks(writer, store, upload_checkpoints=False, poll_interval=0)
    assert throttled.should_stop() is False
    assert eager.should_stop() is False

    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == writer.job_id).values(cancel_requested=True, status="cancelling"))

    assert eager.should_stop() is True
    assert throttled.should_stop() is False  # cached until its interval passes


def test_should_stop_raises_once_the_job_belongs_to_another_attempt(sessions, make_job, tmp_path):
    writer = _claimed_writer(sessions, make_job)
    callbacks = DbCallbacks(writer, LocalArtifactStore(tmp_path), upload_checkpoints=False, poll_interval=0)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == writer.job_id).values(status="queued"))

    with pytest.raises(LeaseLost):
        callbacks.should_stop()


def _fake_checkpoint(root: Path, step: int, size: int) -> Path:
    folder = root / f"step-{step:06d}"
    (folder / "trainer_state").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * size)
    (folder / "trainer_state" / "meta.json").write_text("{}")
    return folder


def _checkpoint_rows(sessions, job_id) -> list[tuple[int, str, int]]:
    with sessions() as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step))
        return [(r.step, r.uri, r.size_bytes) for r in rows]


def test_checkpoints_pruned_by_the_trainer_are_unregistered(sessions, make_job, tmp_path):
    writer = _claimed_writer(sessions, make_job)
    store = LocalArtifactStore(tmp_path / "store")
    callbacks = DbCallbacks(writer, store, upload_checkpoints=False)
    root = store.path_for(f"jobs/{writer.job_id}/checkpoints")

    first = _fake_checkpoint(root, 2, 100)
    callbacks.on_checkpoint(2, first, {"loss": 1.0})
    callbacks.on_checkpoint(4, _fake_checkpoint(root, 4, 300), {"loss": 0.1})
    assert [step for step, _uri, _size in _checkpoint_rows(sessions, writer.job_id)] == [2, 4]

    shutil.rmtree(first)  # retention: the trainer deletes the older folder, then reports it
    callbacks.on_checkpoint_pruned(2, first)

    assert _checkpoint_rows(sessions, writer.job_id) == [(4, f"jobs/{writer.job_id}/checkpoints/step-000004/", 302)]


def test_rows_of_checkpoint_folders_that_vanished_are_dropped(sessions, make_job, tmp_path):
    # given a row left by a crashed attempt whose folder is gone (pruned before it could report it)
    writer = _claimed_writer(sessions, make_job)
    store = LocalArtifactStore(tmp_path / "store")
    callbacks = DbCallbacks(writer, store, upload_checkpoints=False)
    root = store.path_for(f"jobs/{writer.job_id}/checkpoints")
    first = _fake_checkpoint(root, 2, 100)
    callbacks.on_checkpoint(2, first, {})
    shutil.rmtree(first)

    # when the next checkpoint is registered
    callbacks.on_checkpoint(4, _fake_checkpoint(root, 4, 300), {})

    # then only downloadable checkpoints are listed
    assert [step for step, _uri, _size in _checkpoint_rows(sessions, writer.job_id)] == [4]


def test_checkpoint_rows_upsert_keeps_latest_metrics(sessions, make_job, tmp_path):
    writer = _claimed_writer(sessions, make_job)
    store = LocalArtifactStore(tmp_path / "store")
    callbacks = DbCallbacks(writer, store, upload_checkpoints=False)
    folder = _fake_checkpoint(store.path_for(f"jobs/{writer.job_id}/checkpoints"), 2, 10)

    callbacks.on_checkpoint(2, folder, {"loss": 1.0})
    callbacks.on_checkpoint(2, folder, {"loss": 0.5, "eval_accuracy": 0.25})

    with sessions() as session:
        row = session.scalars(select(Checkpoint).where(Checkpoint.job_id == writer.job_id)).one()
    assert (row.step, row.metrics, row.eval_score) == (2, {"loss": 0.5, "eval_accuracy": 0.25}, 0.25)


def test_heartbeat_thread_keeps_a_long_step_fresh(sessions, make_job):
    writer = _claimed_writer(sessions, make_job)
    old = utcnow() - timedelta(hours=1)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == writer.job_id).values(heartbeat_at=old))

    with Heartbeat(writer, interval=0.1):
        time.sleep(0.6)  # one "long step" with no callbacks at all

    assert _job(sessions, writer.job_id).heartbeat_at > utcnow() - timedelta(seconds=5)


def test_writes_survive_a_dropped_database_connection(sessions, make_job, database_url, caplog):
    # given a writer whose only pooled connection is killed by the server (no pre-ping to hide it)
    job = make_job()
    claim = claim_job(sessions, job.id, worker_id="host-1")
    fragile = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    writer = JobWriter(sessionmaker(fragile, expire_on_commit=False), job.id, claim.attempt)
    writer.record_step(1, {"loss": 1.0})
    with fragile.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with sessions.begin() as session:
        assert session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar_one()

    # when the next write runs on the dead connection
    with caplog.at_level(logging.WARNING, logger="service.lifecycle"):
        writer.record_step(2, {"loss": 0.5})

    # then it was retried on a new connection and landed
    assert "transient database error" in caplog.text
    with sessions() as session:
        steps = session.scalars(select(JobMetric.step).where(JobMetric.job_id == job.id)).all()
    assert sorted(steps) == [1, 2]
    fragile.dispose()


def test_jsonable_turns_tensors_and_non_finite_numbers_into_plain_json():
    import torch

    value = {"a": torch.tensor(1.5), "b": [float("inf"), 2], "c": {"d": True, "e": Path("x")}}
    assert jsonable(value) == {"a": 1.5, "b": [None, 2], "c": {"d": True, "e": "x"}}


def test_uploaded_datasets_resolve_to_files_of_the_artifact_store(sessions, make_job, settings):
    # given a dataset stored under its artifact key, referenced by a job the way the API stores it
    store = LocalArtifactStore(settings.artifacts_dir)
    key = "datasets/0b0e7a4c/train.jsonl"
    store.put_bytes(key, b'{"prompt": "1+1=", "answer": "2"}\n')
    eval_key = "datasets/5d1f2a9e/eval.jsonl"
    store.put_bytes(eval_key, b'{"prompt": "2+2=", "answer": "4"}\n')
    with sessions.begin() as session:
        tenant = Tenant(name="data-owner")
        session.add(tenant)
        session.flush()
        dataset = Dataset(
            tenant_id=tenant.id,
            name="train",
            format="jsonl",
            uri=key,
            num_rows=1,
            size_bytes=34,
            prompt_field="prompt",
            answer_field="answer",
        )
        session.add(dataset)
    job = make_job(dataset_id=dataset.id, config=tiny_job_config(data={"train_path": key, "eval_path": eval_key}))

    config = resolve_config(job, sessions, store, Path(settings.artifacts_dir) / ".cache")

    assert config.data.train_path == str(store.path_for(key))
    assert config.data.eval_path == str(store.path_for(eval_key))
    assert Path(config.data.train_path).read_text().startswith('{"prompt": "1+1="')


class _RemoteStore(LocalArtifactStore):
    """A store whose local_path downloads into the cache, as S3ArtifactStore does."""

    def local_path(self, key, cache_dir=None):
        target = Path(cache_dir) / key.rstrip("/")
        shutil.copytree(self.path_for(key), target, dirs_exist_ok=True)
        return target


def test_a_job_checkpoint_model_resolves_to_that_checkpoint_s_folder_for_its_tenant_only(
    sessions, make_job, tmp_path
):
    # given a job with checkpoints at steps 3 and 5 in a remote store
    store = _RemoteStore(tmp_path / "store")
    source = make_job()
    for step in (3, 5):
        key = f"jobs/{source.id}/checkpoints/step-{step:06d}/"
        store.put_bytes(key + "config.json", f'{{"step": {step}}}'.encode())
        with sessions.begin() as session:
            session.add(Checkpoint(job_id=source.id, step=step, uri=key))

    def job_of(tenant_id, model):
        with sessions.begin() as session:
            job = Job(tenant_id=tenant_id, base_model=model, config=tiny_job_config(model={"name_or_path": model}),
                      total_steps=4)  # fmt: skip
            session.add(job)
        return job

    # when jobs of the same tenant name it, the newest checkpoint or step 3
    cache = tmp_path / "cache"
    for model, step in ((f"job:{source.id}", 5), (f"job:{source.id}@3", 3)):
        config = resolve_config(job_of(source.tenant_id, model), sessions, store, cache)
        # then the model is that checkpoint's folder, downloaded into the worker's model cache
        folder = Path(config.model.name_or_path)
        assert folder == cache / "models" / f"jobs/{source.id}/checkpoints/step-{step:06d}"
        assert (folder / "config.json").read_text() == f'{{"step": {step}}}'

    # and a job of another tenant, or a step without a checkpoint, fails naming the model
    other = make_job()
    with pytest.raises(ModelSourceError, match=f"job {source.id} does not exist"):
        resolve_config(job_of(other.tenant_id, f"job:{source.id}@3"), sessions, store, cache)
    with pytest.raises(ModelSourceError, match="no longer has a checkpoint at step 4"):
        resolve_config(job_of(source.tenant_id, f"job:{source.id}@4"), sessions, store, cache)


def test_builtin_data_is_left_as_is(sessions, make_job, tmp_path):
    job = make_job()
    config = resolve_config(job, sessions, LocalArtifactStore(tmp_path), tmp_path)
    assert config.data.train_path == "builtin:addition"


def test_output_dir_is_the_jobs_folder_of_the_local_store(tmp_path):
    store = LocalArtifactStore(tmp_path)
    job_id = uuid.uuid4()

    path, upload = job_output_dir(store, job_id, tmp_path / "cache")

    assert path == store.path_for(f"jobs/{job_id}/") and path.is_dir()
    assert upload is False


@pytest.mark.slow
def test_a_job_that_cannot_train_fails_with_its_error(sessions, make_job, settings):
    job = make_job(config=tiny_job_config(data={"train_path": "/nonexistent/train.jsonl"}))

    outcome = run_job(str(job.id), settings=settings, sessions=sessions)

    assert outcome == "failed"
    row = _job(sessions, job.id)
    assert row.status == "failed" and row.finished_at is not None
    assert row.error.startswith("DatasetError: ") and "train.jsonl" in row.error
    with sessions() as session:
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).one()
        last_event = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc())
        ).first()
    assert (attempt.outcome, attempt.error) == ("failed", row.error)
    assert (last_event.kind, last_event.message) == ("failed", row.error)
    assert claim_job(sessions, job.id, worker_id="another") is None  # a failed job is never retried


def test_a_vllm_job_on_a_worker_without_cuda_or_vllm_fails_at_start(sessions, make_job, settings):
    job = make_job(config=tiny_job_config(rollout={"backend": "vllm"}))

    outcome = run_job(str(job.id), settings=settings, sessions=sessions, device="cpu")

    row = _job(sessions, job.id)
    assert outcome == "failed" and row.status == "failed"
    assert row.error.startswith("RolloutBackendUnavailable: rollout.backend 'vllm' needs a CUDA GPU")
    assert "use rollout.backend 'hf' on this worker" in row.error
    assert row.current_step == 0


@pytest.mark.slow
def test_a_trained_job_records_its_usage_step_by_step_from_the_trainers_metrics(sessions, make_job, settings):
    # given a small job on the builtin model
    job = make_job(config=tiny_job_config(total_steps=3, checkpoint_every=3))

    # when a worker trains it
    assert run_job(str(job.id), settings=settings, sessions=sessions, device="cpu") == "succeeded"

    # then every step has one usage row, consistent with the step's own metrics
    with sessions() as session:
        usage = session.scalars(select(JobUsage).where(JobUsage.job_id == job.id).order_by(JobUsage.step)).all()
        metrics = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.step)).all()
    assert [u.step for u in usage] == [m.step for m in metrics] == [1, 2, 3]
    assert all(u.tenant_id == job.tenant_id for u in usage)
    for row, metric in zip(usage, metrics, strict=True):
        assert row.fresh_rollouts == metric.metrics["fresh_samples"] > 0
        assert 0 < row.generated_tokens <= row.fresh_rollouts * 8  # max_new_tokens = 8
        assert row.trained_tokens >= row.generated_tokens
        assert row.device_seconds == pytest.approx(metric.metrics["step_s"])
    assert sum(u.fresh_rollouts for u in usage) == metrics[-1].metrics["fresh_rollouts_total"]
