"""PostgreSQL crashes and comes back while a job trains.

A private cluster (servers.PostgresServer) is stopped with `pg_ctl -m immediate` (every connection
drops, nothing shuts down cleanly) once the job has written its first metric, and kept down for
several seconds: longer than the few quick retries a worker makes for a dropped connection. Meanwhile
the API (a real uvicorn process) answers its database-backed routes with 503 problem+json carrying
Retry-After, and /readyz says the database is unavailable. When the cluster is back the API recovers
without being restarted, and the worker, which kept retrying its writes with backoff, completes the
job: one metric row for every step, none missing, and every event and checkpoint recorded.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from reliability_testing import assert_problem, make_caller, wait_for
from servers import PostgresServer, RedisServer, start_worker
from sqlalchemy import Engine, exc, func, select
from sqlalchemy.orm import sessionmaker
from testing_support import start_api, tiny_job_config

from service.db import create_db_engine, get_engine
from service.lifecycle import plumbing
from service.migrate import upgrade
from service.models import Checkpoint, Job, JobAttempt, JobEvent, JobMetric
from service.settings import Settings

TOTAL_STEPS = 6
DOWN_FOR = 8.0  # seconds without a database; a worker used to give up after ~4 s of retries
RETRY_AFTER = 7
JOB_TIMEOUT = 600  # the first job of a test session may build the tiny model (~1-2 min)
TASK_SUCCEEDED = re.compile(r"Task worker\.train_job\[[^\]]+\] succeeded in [\d.]+s: 'succeeded'")
# A retried write of the training loop (not just a heartbeat): a step's metrics, an event, a checkpoint.
TRAINING_WRITE = re.compile(r"transient database error during (metrics of step \d+|checkpoint of step \d+|\w+ event)")


def _job_config() -> dict:
    return tiny_job_config(data={"eval_size": 16}, total_steps=TOTAL_STEPS, keep_checkpoints=2, log_completions=0)


def _count(sessions: sessionmaker, model: type, job_id: uuid.UUID) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id)) or 0)


@pytest.mark.slow
def test_postgres_restart_mid_job_gives_503_then_recovers_and_the_job_completes(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    database_url = postgres_server.create_database("remix")
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        broker_url=redis_server.url,
        artifacts_dir=str(tmp_path / "artifacts"),
        task_queue="train",
        heartbeat_seconds=0.5,
        stale_after_seconds=120.0,
        db_retry_after_seconds=RETRY_AFTER,
    )
    engine: Engine = create_db_engine(database_url)  # idle ping: survives the restart like the services
    sessions = sessionmaker(engine, expire_on_commit=False)
    api, url = start_api(settings, tmp_path / "api.log")
    worker = start_worker(settings, tmp_path / "worker.log", "pg-restart")
    try:
        caller = make_caller(database_url)
        http = httpx.Client(base_url=url, headers=caller.headers, timeout=30)
        response = http.post("/v1/jobs", json={"name": "postgres-restart", "config": _job_config()})
        assert response.status_code == 202, response.text
        job_id = uuid.UUID(response.json()["id"])

        # given a job that is training (its first metric row is written, more steps to go)
        def mid_job() -> bool:
            with sessions() as session:
                job = session.get_one(Job, job_id)
            return job.status == "running" and _count(sessions, JobMetric, job_id) >= 1

        wait_for(
            mid_job,
            timeout=JOB_TIMEOUT,
            what="the first step metric",
            interval=0.05,
            on_timeout=worker.log_text,
        )
        assert _count(sessions, JobMetric, job_id) < TOTAL_STEPS

        # when PostgreSQL crashes and stays down for several seconds
        postgres_server.stop(mode="immediate")
        down_at = time.monotonic()

        # then database-backed routes answer 503 problem+json with Retry-After, and the API is not ready
        problem = assert_problem(http.get(f"/v1/jobs/{job_id}"), 503, "database is unavailable")
        assert problem["type"] == "urn:remix:problem:database-unavailable"
        down = http.get(f"/v1/jobs/{job_id}")
        assert down.headers["retry-after"] == str(RETRY_AFTER)
        assert_problem(http.get(f"/v1/jobs/{job_id}/metrics"), 503)
        not_ready = http.get("/readyz")
        body = assert_problem(not_ready, 503, "database")
        assert body["checks"] == {"database": "unavailable", "broker": "ok"}
        assert "retry-after" in not_ready.headers
        assert http.get("/healthz").status_code == 200  # alive, only not ready

        # and the worker trains on until a step's write meets the outage, then retries it and waits
        wait_for(
            lambda: TRAINING_WRITE.search(worker.log_text()),
            timeout=120,
            what="a training write to be retried",
            on_timeout=worker.log_text,
        )
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
        assert worker.alive(), worker.log_text()
        postgres_server.start()

        # when it is back, the same API process serves again by itself
        def serves_again() -> bool:
            assert api.alive(), api.log_text()
            return http.get(f"/v1/jobs/{job_id}").status_code == 200

        wait_for(serves_again, timeout=30, what="the API to recover", on_timeout=api.log_text)
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=30, what="/readyz to report ready")

        # and the job completes on its first attempt with every write in place
        def finished() -> Job | None:
            with sessions() as session:
                job = session.get_one(Job, job_id)
            return job if job.status in ("succeeded", "failed", "cancelled") else None

        job = wait_for(finished, timeout=JOB_TIMEOUT, what="the job to finish", on_timeout=worker.log_text)
        assert job.status == "succeeded", f"{job.error}\n{worker.log_text()[-6000:]}"
        wait_for(  # the task itself returned "succeeded" (its heartbeat thread, too, has finished)
            lambda: len(TASK_SUCCEEDED.findall(worker.log_text())) == 1,
            timeout=60,
            what="the task to return",
            on_timeout=worker.log_text,
        )
        assert (job.attempts, job.current_step) == (1, TOTAL_STEPS)
        with sessions() as session:
            steps = list(session.scalars(select(JobMetric.step).where(JobMetric.job_id == job_id)))
            attempts = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)))
            events = list(
                session.execute(
                    select(JobEvent.kind, JobEvent.step).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
                )
            )
            checkpoints = list(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)))
        assert sorted(steps) == list(range(1, TOTAL_STEPS + 1))  # exactly one row per step, none missing
        assert [(a.attempt, a.outcome) for a in attempts] == [(1, "succeeded")]
        kinds = [kind for kind, _step in events]
        assert kinds.count("started") == 1 and kinds[-1] == "succeeded"
        # (a write whose commit the crash cut off is retried whole: an event may then be stored twice)
        assert sorted({step for kind, step in events if kind == "checkpoint"}) == [2, 4, 6]
        assert "reincarnated" in kinds and "evaluation" in kinds
        assert sorted(checkpoints) == [4, 6]  # keep_checkpoints=2: the rows follow the folders on disk
        on_disk = sorted(p.name for p in (tmp_path / "artifacts" / "jobs" / str(job_id) / "checkpoints").iterdir())
        assert on_disk == ["step-000004", "step-000006"]
        api_job = http.get(f"/v1/jobs/{job_id}").json()
        assert (api_job["status"], api_job["current_step"]) == ("succeeded", TOTAL_STEPS)
        metrics = http.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
        assert [m["step"] for m in metrics] == list(range(1, TOTAL_STEPS + 1))
        http.close()
    finally:
        worker.stop()
        api.stop()
        engine.dispose()
        get_engine(database_url).dispose()


# ----------------------------------------------------------------------------- the retry window


class _Clock:
    """Stands in for the `time` module of service.lifecycle.plumbing (retry_db): sleeping advances a fake clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _outage(failures: int, clock: _Clock, error: exc.DBAPIError | None = None):  # noqa: ANN202
    """An operation that fails `failures` times (connection refused), then returns the clock time."""
    calls = {"n": 0}
    error = error or exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    def operation() -> float:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return clock.now

    return operation, calls


def test_a_write_is_retried_through_an_outage_within_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(plumbing, "time", clock)
    # 20 failures last ~62 s of backoff (0.25, 0.5, 1, 2, then 4 s apart): far past the 5 quick tries
    operation, calls = _outage(20, clock)
    finished_at = plumbing.retry_db(operation, what="metrics of step 3", window=120.0)
    assert calls["n"] == 21
    assert 60 <= finished_at - 1000.0 <= 70


def test_retries_stop_once_the_window_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(plumbing, "time", clock)
    operation, calls = _outage(10_000, clock)
    with pytest.raises(exc.OperationalError):
        plumbing.retry_db(operation, what="metrics of step 3", window=30.0)
    assert 30.0 <= clock.now - 1000.0 <= 30.0 + plumbing.RETRY_MAX_DELAY_S  # bounded by the window
    assert calls["n"] < 20


def test_without_a_window_only_the_quick_retries_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(plumbing, "time", clock)
    operation, calls = _outage(10_000, clock)
    with pytest.raises(exc.OperationalError):
        plumbing.retry_db(operation, what="reaping job x")
    assert calls["n"] == plumbing.RETRY_ATTEMPTS


def test_errors_that_are_not_outages_are_never_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(plumbing, "time", clock)
    refused = exc.IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint"))
    operation, calls = _outage(10_000, clock, refused)
    with pytest.raises(exc.IntegrityError):
        plumbing.retry_db(operation, what="metrics of step 3", window=120.0)
    assert calls["n"] == 1 and clock.now == 1000.0
