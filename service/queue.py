"""Dispatch of training jobs to Celery workers, by task name only.

The API process builds a bare Celery client from Settings: it never imports `worker/` or torch,
so the web tier stays small and starts fast. The worker registers `worker.train_job`.
"""

from __future__ import annotations

import threading

from celery import Celery

from service.settings import Settings

TRAIN_TASK = "worker.train_job"

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


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """Raise if the broker cannot be reached within `timeout` seconds (readiness probe)."""
    with celery_client(settings.broker_url).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)  # type: ignore[arg-type]  # kombu compares it with elapsed float seconds; its stub's int is narrower than the code
        # Redis connects lazily; touching the default channel proves the server answers.
        conn.default_channel  # noqa: B018
