"""Fixtures of the reliability tests: a fresh migrated Postgres database on the shared server, the
shared Redis broker with a queue of its own, a local artifact store, an in-process API and callers.

Fault tests that stop servers never touch the shared ones: they start their own (servers.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from reliability_testing import UPLOAD_LIMIT
from servers import postgres_server, redis_server  # noqa: F401 - fixtures for the fault tests

from service.main import create_app
from service.settings import Settings, get_settings

REDIS_URL = os.environ.get("REMIX_TEST_RELIABILITY_REDIS", "redis://127.0.0.1:6379/12")


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
    queue = f"reliability-{uuid.uuid4().hex[:8]}"
    yield Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        task_queue=queue,
        max_upload_bytes=UPLOAD_LIMIT,
        sse_poll_seconds=0.05,
    )
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


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
