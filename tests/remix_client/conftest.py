"""Fixtures of the client tests: the real API served by uvicorn on 127.0.0.1, backed by a fresh
Postgres database (built by the Alembic migration), a Redis broker queue of its own and a local
artifact store, plus per-test tenants with API keys and a RemixClient for each.

Database and API-key helpers come from tests/service/service_testing.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from client_testing import serve_in_thread
from testing_support import Caller

from remix_client import RemixClient
from service.main import create_app
from service.settings import Settings

REDIS_URL = os.environ.get("REMIX_TEST_REDIS", "redis://127.0.0.1:6379/14")
UPLOAD_LIMIT = 4096


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    queue = f"test-client-{uuid.uuid4().hex[:8]}"
    yield Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        artifacts_dir=str(tmp_path_factory.mktemp("client-artifacts")),
        task_queue=queue,
        max_upload_bytes=UPLOAD_LIMIT,
        sse_poll_seconds=0.05,
    )
    with redis.Redis.from_url(REDIS_URL) as broker:  # the queue and the bindings kombu records for it
        broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture(scope="session")
def base_url(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def remix(base_url: str, alice: Caller) -> Iterator[RemixClient]:
    """Alice's client (short backoff: retried calls should not slow the tests down)."""
    with RemixClient(base_url, alice.key, timeout=10, backoff_base=0.01) as client:
        yield client
