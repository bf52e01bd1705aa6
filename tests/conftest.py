"""Fixtures shared by the suites that talk to Postgres: a fresh migrated database for the test session,
a session for reads (`db`), the sessionmaker that the lifecycle's worker-side transitions take
(`sessions`: claim a job and write as its attempt with `testing_support.claim_as_worker`), and callers
(tenants with API keys). Also, for any suite,
the session's stand-in models (`qwen_standin`, `r1_standin`, `llama_standin`; see standin_fixtures.py).

The database is created once per test session (CREATE DATABASE remix_test_<random>) and dropped at
the end; tests stay independent by working in tenants of their own. Suites add their own settings,
broker queue and app on top (their conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from standin_fixtures import llama_standin, qwen_standin, r1_standin  # noqa: F401  (fixtures for every suite)
from testing_support import Caller, create_database, drop_database, make_caller


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from service.db import dispose_engines
    from service.migrate import upgrade

    url = create_database()
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        drop_database(url)


@pytest.fixture
def db(database_url: str) -> Iterator[Session]:
    """A session for reads and tenant/key writes; job state changes go through service.lifecycle."""
    from service.db import session_factory

    with session_factory(database_url)() as session:
        yield session


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    """The sessionmaker a worker hands to service.lifecycle (claim_job, JobWriter, reap_job)."""
    from service.db import session_factory

    return session_factory(database_url)


@pytest.fixture
def alice(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def bob(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def admin(database_url: str) -> Caller:
    return make_caller(database_url, admin=True)
