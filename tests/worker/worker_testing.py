"""Helpers shared by the worker tests: job configs, subprocess management, polling, broker inspection."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from testing_support import REPO_ROOT, ManagedProcess, free_port, service_env, wait_for

__all__ = ["REPO_ROOT", "ManagedProcess", "free_port", "service_env", "wait_for"]


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
