"""The Celery application of the workers, configured from `Settings`.

Queues: `settings.task_queue` ("gpu") carries `worker.train_job` (and `worker.join_job_node`, a further
node of a multi-node job), one job per GPU worker process
(`worker_max_tasks_per_child=1` gives every job a fresh process and CUDA context);
"maintenance" carries the periodic `worker.reap_stale_jobs` and `worker.sweep_webhooks` (beat
schedule below) and the webhook deliveries, `worker.deliver_webhook`. Training
tasks are acknowledged early on purpose: a job runs for hours, and crash recovery comes from the
database (heartbeats, the reaper, checkpoints), not from broker redelivery. Results are not
stored: job state lives in the database. Start a worker with
`celery -A worker.celery_app worker -Q gpu,maintenance -c 1`.

This module never imports `worker.tasks`: the app names it in `include`, and Celery imports it
when a worker starts; the tasks module imports the app, so the dependency runs one way only.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery
from sqlalchemy.engine import make_url

from service.queue import DELIVER_WEBHOOK_TASK, JOIN_NODE_TASK, MAINTENANCE_QUEUE, TRAIN_TASK
from service.settings import Settings, get_settings

REAP_TASK = "worker.reap_stale_jobs"
SWEEP_WEBHOOKS_TASK = "worker.sweep_webhooks"
__all__ = ["MAINTENANCE_QUEUE", "REAP_TASK", "SWEEP_WEBHOOKS_TASK", "create_celery_app", "reap_interval"]
MAX_REAP_INTERVAL_S = 30.0


def reap_interval(settings: Settings) -> float:
    """Every 30 s, or often enough to notice a stale job within ~1.25x stale_after_seconds."""
    return max(0.5, min(MAX_REAP_INTERVAL_S, settings.stale_after_seconds / 4))


def _prepare_embedded_broker(broker_url: str) -> None:
    """The SQLite broker (`sqla+sqlite:///./var/broker.db`) needs its folder to exist."""
    if broker_url.startswith("sqla+sqlite:"):
        database = make_url(broker_url.removeprefix("sqla+")).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_celery_app(settings: Settings) -> Celery:
    _prepare_embedded_broker(settings.broker_url)
    app = Celery("remix", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        # Do not reserve a second job while one trains (it would wait hours, or be lost with the worker).
        worker_disable_prefetch=settings.broker_url.startswith(("redis://", "rediss://")),
        worker_max_tasks_per_child=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.task_queue,
        task_routes={
            TRAIN_TASK: {"queue": settings.task_queue},
            JOIN_NODE_TASK: {"queue": settings.task_queue},
            REAP_TASK: {"queue": MAINTENANCE_QUEUE},
            DELIVER_WEBHOOK_TASK: {"queue": MAINTENANCE_QUEUE},
            SWEEP_WEBHOOKS_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        beat_schedule={
            "reap-stale-jobs": {
                "task": REAP_TASK,
                "schedule": reap_interval(settings),
                # A reaper run that waited longer than one period is superseded by the next one.
                "options": {"queue": MAINTENANCE_QUEUE, "expires": reap_interval(settings)},
            },
            "sweep-webhooks": {
                "task": SWEEP_WEBHOOKS_TASK,
                "schedule": settings.webhook_sweep_seconds,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.webhook_sweep_seconds},
            },
        },
        worker_redirect_stdouts_level="INFO",
    )
    return app


app = create_celery_app(get_settings())
