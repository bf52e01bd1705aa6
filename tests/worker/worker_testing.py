"""Helpers shared by the worker tests: job configs, subprocess management, polling, broker inspection."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_job_config(**overrides: Any) -> dict[str, Any]:
    """A remix-grpo job on the builtin tiny model, small enough for a CPU test."""
    config: dict[str, Any] = {
        "model": {"name_or_path": "builtin:tiny-arith"},
        "data": {"train_path": "builtin:addition", "eval_size": 32},
        "rollout": {"prompts_per_step": 8, "group_size": 4, "max_new_tokens": 8},
        "algorithm": {"name": "remix-grpo", "reincarnation_step": 2, "minibatch_size": 32},
        "optim": {"lr": 1e-4},
        "total_steps": 4,
        "checkpoint_every": 2,
        "log_completions": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a worker/API subprocess pointed at the test resources."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    env.update(
        {
            "REMIX_DATABASE_URL": settings.database_url,
            "REMIX_BROKER_URL": settings.broker_url,
            "REMIX_ARTIFACTS_DIR": settings.artifacts_dir,
            "REMIX_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "REMIX_STALE_AFTER_SECONDS": str(settings.stale_after_seconds),
            "REMIX_MAX_ATTEMPTS": str(settings.max_attempts),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if "REMIX_CACHE_DIR" in os.environ:
        env["REMIX_CACHE_DIR"] = os.environ["REMIX_CACHE_DIR"]
    env.update(extra)
    return env


class ManagedProcess:
    """A subprocess in its own process group, logging to a file; `kill()` is a whole-machine crash."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once: nothing gets to clean up."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        try:  # pool children outlive a parent killed mid-shutdown; reap the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail[-6000:]}")


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
