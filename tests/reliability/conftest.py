"""Fixtures of the reliability tests: a fresh migrated Postgres database on the shared server, the
shared Redis broker with a queue of its own, a local artifact store, an in-process API and callers.

Fault tests that stop servers never touch the shared ones: they start their own (servers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from reliability_testing import UPLOAD_LIMIT
from servers import postgres_server, redis_server  # noqa: F401 - fixtures for the fault tests
from testing_support import api_settings, redis_connection

from service.main import create_app
from service.settings import Settings, get_settings

REDIS_URL = os.environ.get("REMIX_TEST_RELIABILITY_REDIS", "redis://127.0.0.1:6379/12")


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
        database_url, redis_client, REDIS_URL, artifacts, queue_prefix="reliability", upload_limit=UPLOAD_LIMIT
    ) as settings:
        yield settings


@pytest.fixture(scope="session")
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app)


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # Code under test may call get_settings(); never let one test's environment leak into another.
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
