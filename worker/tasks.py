"""Celery tasks: `worker.train_job(job_id)`, `worker.join_job_node(job_id, attempt, node)`,
`worker.reap_stale_jobs()`, `worker.deliver_webhook(delivery_id)` and `worker.sweep_webhooks()`, and the
start-up reaper.

They take ids only (JSON), and each is safe to run twice: a second train_job finds the job claimed,
a second join_job_node finds the node taken (or its attempt over), a second deliver_webhook finds the
delivery done or not due (service/webhooks/delivery.py). The
bodies stay thin: the work lives in worker/job_runner.py, worker/reaper.py and
service/webhooks/delivery.py, which tests call directly. torch and the trainer are imported inside
`run_job`, never at module import, so the maintenance worker and beat stay light.

The start-up reaper is connected to `worker_ready` here, beside the reaper task: a worker imports
this module (the app's `include`) before it reports ready.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.signals import worker_ready
from sqlalchemy.orm import sessionmaker

from service.db import create_db_engine, session_factory
from service.queue import DELIVER_WEBHOOK_TASK, JOIN_NODE_TASK, TRAIN_TASK, enqueue_webhook_delivery, webhook_sender
from service.settings import Settings, get_settings
from service.webhooks import delivery
from service.webhooks.events import set_delivery_sender
from worker.celery_app import REAP_TASK, SWEEP_WEBHOOKS_TASK, app
from worker.job_runner import run_job, worker_identity
from worker.reaper import reap_stale_jobs as reap

log = logging.getLogger(__name__)


def _send_deliveries(delivery_ids: list[uuid.UUID]) -> None:
    webhook_sender(get_settings())(delivery_ids)  # the settings of the moment, not of the import


# Webhook events recorded by this worker's transitions (a job's outcome, a checkpoint) are sent at commit.
set_delivery_sender(_send_deliveries)


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


@app.task(name=JOIN_NODE_TASK, acks_late=False, ignore_result=True)
def join_job_node(job_id: str, attempt: int, node: int) -> str:
    """Run node `node` of a multi-node job's attempt on this worker (sent by the worker hosting node 0)."""
    from worker.distributed_launch import run_node  # torch is imported there, only on training workers

    settings = get_settings()
    sessions = session_factory(settings.database_url)
    return run_node(job_id, attempt, node, settings=settings, sessions=sessions, worker_id=worker_identity())


@app.task(name=REAP_TASK, ignore_result=True)
def reap_stale_jobs() -> dict[str, int]:
    """Re-queue (or fail) running jobs whose heartbeat is stale."""
    return reap_in_process(get_settings())


@app.task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str | None:
    """Make one attempt of a webhook delivery; a failed one sends itself again after the retry delay."""
    settings = get_settings()
    outcome = delivery.deliver(session_factory(settings.database_url), settings, uuid.UUID(delivery_id))
    if outcome is None:
        return None  # done already, not due yet, or being attempted elsewhere
    if outcome.retry_in is not None:
        enqueue_webhook_delivery(settings, delivery_id, countdown=outcome.retry_in)
    return outcome.status


@app.task(name=SWEEP_WEBHOOKS_TASK, ignore_result=True)
def sweep_webhooks() -> int:
    """Re-send the deliveries that are overdue: their task was lost to a broker outage or a dead worker."""
    settings = get_settings()
    with session_factory(settings.database_url)() as session:
        overdue = delivery.due_deliveries(session, older_than_s=settings.webhook_sweep_seconds)
    for delivery_id in overdue:
        enqueue_webhook_delivery(settings, delivery_id)
    return len(overdue)


@worker_ready.connect
def _reap_on_startup(**_kwargs: Any) -> None:
    """A (re)started worker recovers jobs orphaned by a dead one without waiting for beat."""
    try:
        counts = reap_in_process(get_settings())
        log.info("start-up reaper: %s", counts or "no stale jobs")
    except Exception:  # the database may not be up yet; the periodic reaper will retry
        log.exception("start-up reaper failed")
