"""Helpers shared by the worker tests: job configs, subprocess management, polling, broker inspection."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from testing_support import REPO_ROOT, ManagedProcess, free_port, service_env, tiny_job_config, wait_for

from service.settings import Settings

__all__ = ["REPO_ROOT", "ManagedProcess", "free_port", "running_api", "service_env", "tiny_job_config", "wait_for"]


@contextmanager
def running_api(settings: Settings, log_path: Path) -> Iterator[str]:
    """A real `uvicorn service.main:app` on `settings`, answering /healthz; yields its base URL."""
    port = free_port()
    api = ManagedProcess(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
        service_env(settings),
        log_path,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert api.alive(), api.log_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=60, what="the API to answer /healthz", on_timeout=api.log_text)
        yield url
    finally:
        api.stop()


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
