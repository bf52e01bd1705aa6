"""Helpers shared by the worker tests: job configs, subprocess management (the API through
testing_support.running_api), polling, broker inspection."""

from __future__ import annotations

import base64
import json

import redis
from testing_support import REPO_ROOT, ManagedProcess, free_port, running_api, service_env, tiny_job_config, wait_for

__all__ = ["REPO_ROOT", "ManagedProcess", "free_port", "running_api", "service_env", "tiny_job_config", "wait_for"]


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
