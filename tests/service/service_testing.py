"""Helpers shared by the service tests (callers with API keys, problem assertions, queue reads)."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from fastapi.testclient import TestClient
from testing_support import ADMIN_PG, Caller, assert_problem, create_database, drop_database, make_caller

__all__ = ["ADMIN_PG", "Caller", "assert_problem", "create_database", "drop_database", "make_caller"]


def queued_messages(redis_client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Celery messages waiting in a Redis queue, decoded: [{'task', 'id', 'kwargs'}]."""
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "id": message["headers"]["id"], "kwargs": kwargs})
    return out


def submit(client: TestClient, caller: Caller, config: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"config": config or {"total_steps": 5}, **body}, headers=caller.headers)
    assert response.status_code == 202, response.text
    return response.json()
