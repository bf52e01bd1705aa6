"""Dispatch of training jobs and webhook deliveries to Celery workers, by task name only.

The API process builds a bare Celery client from Settings: it never imports `worker/` or torch,
so the web tier stays small and starts fast. The worker registers `worker.train_job` (on the
training queue) and `worker.deliver_webhook` (on the maintenance queue: a GPU worker busy training
for hours must not hold up a webhook).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from celery import Celery

from service.settings import Settings

TRAIN_TASK = "worker.train_job"
JOIN_NODE_TASK = "worker.join_job_node"  # a further node of a multi-node job, sent by the worker hosting it
DELIVER_WEBHOOK_TASK = "worker.deliver_webhook"
MAINTENANCE_QUEUE = "maintenance"

_clients: dict[str, Celery] = {}
_lock = threading.Lock()


def celery_client(broker_url: str) -> Celery:
    """A cached producer-only Celery app for `broker_url` (JSON only, no result backend)."""
    with _lock:
        if broker_url not in _clients:
            app = Celery("remix-api", broker=broker_url, set_as_current=False)
            app.conf.update(
                task_serializer="json",
                accept_content=["json"],
                task_ignore_result=True,
                broker_connection_retry_on_startup=True,
                broker_connection_timeout=5,
                # Fail fast when the broker is down: the job row stays queued and a retry of the
                # same request (Idempotency-Key) dispatches it again.
                task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
            )
            _clients[broker_url] = app
        return _clients[broker_url]


def enqueue_train_job(settings: Settings, job_id: object, *, task_id: str | None = None) -> str:
    """Send `worker.train_job(job_id=...)` to the training queue; returns the Celery task id."""
    result = celery_client(settings.broker_url).send_task(
        TRAIN_TASK, kwargs={"job_id": str(job_id)}, queue=settings.task_queue, task_id=task_id
    )
    return str(result.id)


def enqueue_join_node(settings: Settings, job_id: object, attempt: int, node: int) -> str:
    """Send `worker.join_job_node(job_id, attempt, node)` to the training queue: one more worker joins the job."""
    result = celery_client(settings.broker_url).send_task(
        JOIN_NODE_TASK,
        kwargs={"job_id": str(job_id), "attempt": attempt, "node": node},
        queue=settings.task_queue,
    )
    return str(result.id)


def enqueue_webhook_delivery(settings: Settings, delivery_id: object, *, countdown: float | None = None) -> None:
    """Send `worker.deliver_webhook(delivery_id=...)` to the maintenance queue (after `countdown` s)."""
    celery_client(settings.broker_url).send_task(
        DELIVER_WEBHOOK_TASK, kwargs={"delivery_id": str(delivery_id)}, queue=MAINTENANCE_QUEUE, countdown=countdown
    )


def webhook_sender(settings: Settings) -> Callable[[list[uuid.UUID]], None]:
    """A delivery sender for service.webhooks.events.set_delivery_sender, on these settings' broker."""

    def send(delivery_ids: list[uuid.UUID]) -> None:
        for delivery_id in delivery_ids:
            enqueue_webhook_delivery(settings, delivery_id)

    return send


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """Raise if the broker cannot be reached within `timeout` seconds (readiness probe)."""
    with celery_client(settings.broker_url).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)  # type: ignore[arg-type]  # kombu compares it with elapsed float seconds; its stub's int is narrower than the code
        # Redis connects lazily; touching the default channel proves the server answers.
        conn.default_channel  # noqa: B018
