"""Fixtures of the client tests: the real API served by uvicorn on 127.0.0.1, backed by a fresh
Postgres database (built by the Alembic migration), a Redis broker queue of its own and a local
artifact store, plus per-test tenants with API keys and a RemixClient for each.

Database and API-key helpers come from tests/service/service_testing.py.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session

# tests/ is not a package: make the service tests' helper module importable from here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from client_testing import serve_in_thread  # noqa: E402
from service_testing import Caller, create_database, drop_database, make_caller  # noqa: E402

from remix_client import RemixClient  # noqa: E402
from service.db import dispose_engines, session_factory  # noqa: E402
from service.main import create_app  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402

REDIS_URL = os.environ.get("REMIX_TEST_REDIS", "redis://127.0.0.1:6379/14")
UPLOAD_LIMIT = 4096


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database()
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        drop_database(url)


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
def db(database_url: str) -> Iterator[Session]:
    """A session writing rows the way a worker does."""
    with session_factory(database_url)() as session:
        yield session


@pytest.fixture
def alice(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def bob(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def remix(base_url: str, alice: Caller) -> Iterator[RemixClient]:
    """Alice's client (short backoff: retried calls should not slow the tests down)."""
    with RemixClient(base_url, alice.key, timeout=10, backoff_base=0.01) as client:
        yield client
