"""Helpers shared by the worker tests: job configs, subprocess management (the API through
testing_support.running_api), polling, broker inspection."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from sqlalchemy import select
from testing_support import REPO_ROOT, ManagedProcess, free_port, running_api, service_env, tiny_job_config, wait_for

from service.models import Job, JobEvent
from service.settings import Settings

__all__ = [
    "REPO_ROOT",
    "ManagedProcess",
    "free_port",
    "job_events",
    "job_row",
    "running_api",
    "send_train_job",
    "service_env",
    "tiny_job_config",
    "wait_for",
]


def job_row(sessions, job_id) -> Job:
    """The job's row as the database has it now."""
    with sessions() as session:
        return session.get_one(Job, uuid.UUID(str(job_id)))


def send_train_job(settings: Settings, job: Job) -> None:
    """Send `worker.train_job` for `job` to the training queue, as the API does."""
    from worker.celery_app import create_celery_app

    create_celery_app(settings).send_task("worker.train_job", kwargs={"job_id": str(job.id)}, queue=settings.task_queue)


def job_events(sessions, job_id) -> list[JobEvent]:
    """The job's events, oldest first."""
    with sessions() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def queued_train_jobs(redis_url: str, queue: str) -> list[str]:
    """job_id kwargs of the worker.train_job messages waiting in a Redis queue, oldest first."""
    messages = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    job_ids = []
    for raw in reversed(messages):  # kombu LPUSHes, workers pop from the right
        message = json.loads(raw)
        assert message["headers"]["task"] == "worker.train_job"
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        job_ids.append(kwargs["job_id"])
    return job_ids
