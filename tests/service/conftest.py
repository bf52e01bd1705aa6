"""Fixtures of the service tests: a fresh Postgres database built by the Alembic migration,
a real Redis broker with a queue of its own, a local artifact store and per-test tenants.

The database is created once per test session (CREATE DATABASE remix_test_<random>) and dropped
at the end; tests stay independent by working in tenants of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from testing_support import api_settings, redis_connection

from service.main import create_app
from service.settings import Settings

REDIS_URL = os.environ.get("REMIX_TEST_REDIS", "redis://127.0.0.1:6379/14")
UPLOAD_LIMIT = 4096


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    with redis_connection(REDIS_URL) as client:
        yield client


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    with api_settings(
        database_url, redis_client, REDIS_URL, artifacts, queue_prefix="test-train", upload_limit=UPLOAD_LIMIT
    ) as settings:
        yield settings


@pytest.fixture(scope="session")
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))
