"""Fixtures of the service tests: a fresh Postgres database built by the Alembic migration,
a real Redis broker with a queue of its own, a local artifact store and per-test tenants.

The database is created once per test session (CREATE DATABASE remix_test_<random>) and dropped
at the end; tests stay independent by working in tenants of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings

REDIS_URL = os.environ.get("REMIX_TEST_REDIS", "redis://127.0.0.1:6379/14")
UPLOAD_LIMIT = 4096


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    queue = f"test-train-{uuid.uuid4().hex[:8]}"
    yield Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        task_queue=queue,
        max_upload_bytes=UPLOAD_LIMIT,
        sse_poll_seconds=0.05,
    )
    # The queue and the exchange bindings kombu records for it.
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture(scope="session")
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))
