"""Helpers shared by the service tests (callers with API keys, problem assertions, queue reads)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from fastapi.testclient import TestClient

from service.db import session_factory
from service.repositories.tenants import create_api_key, get_or_create_tenant

ADMIN_PG = os.environ.get("REMIX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _server_url(database: str) -> str:
    base = ADMIN_PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def create_database() -> str:
    """A new empty Postgres database; returns its SQLAlchemy URL."""
    name = f"remix_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _server_url(name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Caller:
    tenant_id: uuid.UUID
    key: str
    headers: dict[str, str]


def make_caller(database_url: str, *, admin: bool = False) -> Caller:
    with session_factory(database_url)() as session:
        tenant = get_or_create_tenant(session, f"tenant-{uuid.uuid4().hex[:10]}")
        _, key = create_api_key(session, tenant, name="test", is_admin=admin)
        return Caller(tenant.id, key, {"Authorization": f"Bearer {key}"})


def assert_problem(response: Any, status: int, detail_part: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status whose detail contains `detail_part`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    assert detail_part in body["detail"], body["detail"]
    return body


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
