"""Celery tasks: `worker.train_job(job_id)` and `worker.reap_stale_jobs()`, and the start-up reaper.

Both take ids only (JSON). The bodies stay thin: the work lives in worker/job_runner.py and
worker/reaper.py, which tests call directly. torch and the trainer are imported inside
`run_job`, never at module import, so the maintenance worker and beat stay light.

The start-up reaper is connected to `worker_ready` here, beside the reaper task: a worker imports
this module (the app's `include`) before it reports ready.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready
from sqlalchemy.orm import sessionmaker

from service.db import create_db_engine
from service.queue import TRAIN_TASK
from service.settings import Settings, get_settings
from worker.celery_app import REAP_TASK, app
from worker.job_runner import run_job
from worker.reaper import reap_stale_jobs as reap

log = logging.getLogger(__name__)


def send_train_job(job_id: str, settings: Settings | None = None) -> str:
    """Enqueue `worker.train_job` on the training queue; returns the Celery task id."""
    queue = (settings or get_settings()).task_queue
    return str(app.send_task(TRAIN_TASK, kwargs={"job_id": job_id}, queue=queue).id)


def reap_in_process(settings: Settings) -> dict[str, int]:
    """Run the reaper with a private engine that is disposed afterwards.

    Used from the worker's parent process at start-up: pooled connections must not be inherited
    by the forked pool processes.
    """
    engine = create_db_engine(settings.database_url)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        return reap(sessions, settings, lambda job_id: send_train_job(job_id, settings))
    finally:
        engine.dispose()


@app.task(name=TRAIN_TASK, bind=True, acks_late=False, ignore_result=True)
def train_job(self: Any, job_id: str) -> str:
    """Train one job; a second delivery of the same id is a logged no-op. A job held back by its tenant's
    running-jobs limit stays queued and this task is retried after quota_retry_seconds, without end."""
    settings = get_settings()
    outcome = run_job(job_id, settings=settings, celery_task_id=self.request.id)
    if outcome == "deferred":
        raise self.retry(countdown=settings.quota_retry_seconds, max_retries=None)
    return outcome


@app.task(name=REAP_TASK, ignore_result=True)
def reap_stale_jobs() -> dict[str, int]:
    """Re-queue (or fail) running jobs whose heartbeat is stale."""
    return reap_in_process(get_settings())


@worker_ready.connect
def _reap_on_startup(**_kwargs: Any) -> None:
    """A (re)started worker recovers jobs orphaned by a dead one without waiting for beat."""
    try:
        counts = reap_in_process(get_settings())
        log.info("start-up reaper: %s", counts or "no stale jobs")
    except Exception:  # the database may not be up yet; the periodic reaper will retry
        log.exception("start-up reaper failed")
