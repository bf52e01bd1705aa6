"""Redis, the Celery broker, crashes and comes back while a job trains.

A private Redis (servers.RedisServer, no persistence: a restart forgets every key) is killed with
SIGKILL once the job has written its first metric and restarted on the same port a couple of seconds
later. The running job does not depend on the broker (its task was acknowledged on receipt; its
state lives in Postgres), so it trains on and finishes with one metric row per step. The worker and
the API both reconnect by themselves: a job submitted over HTTP after the restart is dispatched,
picked up by the same worker process and trained too.

The job runs against a database of its own: the worker's start-up reaper must not see (and re-queue)
jobs other tests left running in the shared reliability database.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_testing import create_database, drop_database, make_caller, wait_for
from servers import ManagedProcess, RedisServer, start_worker
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from testing_support import start_api, tiny_job_config

from service.db import create_db_engine, get_engine
from service.migrate import upgrade
from service.models import Job, JobAttempt, JobEvent, JobMetric
from service.settings import Settings

pytestmark = pytest.mark.slow

TOTAL_STEPS = 6
DOWN_FOR = 2.0  # seconds without a broker
JOB_TIMEOUT = 600  # the first job of a test session may build the tiny model (~1-2 min)
TASK_SUCCEEDED = re.compile(r"Task worker\.train_job\[[^\]]+\] succeeded in [\d.]+s: 'succeeded'")


@pytest.fixture
def own_database() -> Iterator[str]:
    """A new migrated database on the shared server, dropped afterwards."""
    url = create_database()
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        drop_database(url)


@pytest.fixture
def db(own_database: str) -> Iterator[Session]:
    engine = create_db_engine(own_database)
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    engine.dispose()


def _job_config(total_steps: int) -> dict[str, Any]:
    return tiny_job_config(data={"eval_size": 16}, total_steps=total_steps, log_completions=0)


def _submit(http: httpx.Client, name: str, total_steps: int) -> uuid.UUID:
    response = http.post("/v1/jobs", json={"name": name, "config": _job_config(total_steps)})
    assert response.status_code == 202, response.text  # stored and dispatched (a broker failure is a 503)
    return uuid.UUID(response.json()["id"])


def _metric_steps(db: Session, job_id: uuid.UUID) -> list[int]:
    db.rollback()
    return sorted(db.scalars(select(JobMetric.step).where(JobMetric.job_id == job_id)))


def _finished(db: Session, job_id: uuid.UUID, worker: ManagedProcess, tasks: int) -> Job:
    """The job's final row, once the worker has logged `tasks` tasks returning "succeeded"."""

    def done() -> Job | None:
        db.rollback()
        job = db.get_one(Job, job_id, populate_existing=True)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    job = wait_for(done, timeout=JOB_TIMEOUT, what=f"job {job_id} to finish", on_timeout=worker.log_text)
    if job.status == "succeeded":
        wait_for(
            lambda: len(TASK_SUCCEEDED.findall(worker.log_text())) == tasks,
            timeout=60,
            what="the task to return",
            on_timeout=worker.log_text,
        )
    return job


def test_redis_restart_mid_job_the_worker_reconnects_and_the_job_finishes(
    redis_server: RedisServer, own_database: str, db: Session, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=own_database,
        broker_url=redis_server.url,
        artifacts_dir=str(tmp_path / "artifacts"),
        task_queue="train",
        heartbeat_seconds=0.5,
        stale_after_seconds=120.0,
    )
    api, url = start_api(settings, tmp_path / "api.log")
    worker = start_worker(settings, tmp_path / "worker.log", "redis-restart")
    caller = make_caller(own_database)
    try:
        with httpx.Client(base_url=url, headers=caller.headers, timeout=30) as http:
            first = _submit(http, "redis-restart", TOTAL_STEPS)

            # given a job that is training (its first metric row is written, more steps to go)
            def mid_job() -> bool:
                db.rollback()
                job = db.get_one(Job, first, populate_existing=True)
                return job.status == "running" and bool(_metric_steps(db, first))

            wait_for(
                mid_job,
                timeout=JOB_TIMEOUT,
                what="the first step metric",
                interval=0.05,
                on_timeout=worker.log_text,
            )

            # when the broker crashes and comes back empty a couple of seconds later
            redis_server.stop()
            db.rollback()
            assert db.get_one(Job, first, populate_existing=True).status == "running"
            assert len(_metric_steps(db, first)) < TOTAL_STEPS, "the job finished before the broker went down"
            time.sleep(DOWN_FOR)
            redis_server.start()

            # then the worker notices, reconnects, and the running job finishes as if nothing happened
            wait_for(
                lambda: "Connection to broker lost" in worker.log_text(),
                timeout=30,
                what="the worker to notice the lost broker",
                on_timeout=worker.log_text,
            )
            job = _finished(db, first, worker, tasks=1)
            assert job.status == "succeeded", f"{job.error}\n{worker.log_text()[-6000:]}"
            assert (job.attempts, job.current_step) == (1, TOTAL_STEPS)
            assert _metric_steps(db, first) == list(range(1, TOTAL_STEPS + 1))  # one row per step, none lost
            attempts = db.scalars(select(JobAttempt.outcome).where(JobAttempt.job_id == first)).all()
            assert attempts == ["succeeded"]
            kinds = db.scalars(select(JobEvent.kind).where(JobEvent.job_id == first).order_by(JobEvent.id)).all()
            assert kinds.count("started") == 1 and kinds[-1] == "succeeded"
            assert "stalled" not in kinds and "requeued" not in kinds

            # and a job submitted after the restart is dispatched by the API and trained by the same worker
            second = _submit(http, "after-restart", 2)
            job = _finished(db, second, worker, tasks=2)
            assert job.status == "succeeded", f"{job.error}\n{worker.log_text()[-6000:]}"
            assert _metric_steps(db, second) == [1, 2]
            assert worker.alive() and api.alive()
            assert worker.log_text().count("Connected to redis://") >= 2  # at start and after the restart
            over_http = http.get(f"/v1/jobs/{first}/metrics").json()["data"]
            assert [m["step"] for m in over_http] == list(range(1, TOTAL_STEPS + 1))
        db.rollback()
        total = db.scalar(select(func.count()).select_from(JobMetric).where(JobMetric.job_id.in_([first, second])))
        assert total == TOTAL_STEPS + 2
    finally:
        worker.stop()
        api.stop()
