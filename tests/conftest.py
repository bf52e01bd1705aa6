"""Fixtures shared by the suites that talk to Postgres: a fresh migrated database for the test session,
a session writing rows the way a worker does, and callers (tenants with API keys). Also, for any suite,
the session's stand-in models (`qwen_standin`, `r1_standin`, `llama_standin`; see standin_fixtures.py).

The database is created once per test session (CREATE DATABASE remix_test_<random>) and dropped at
the end; tests stay independent by working in tenants of their own. Suites add their own settings,
broker queue and app on top (their conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session
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
    """A session writing rows the way a worker does."""
    from service.db import session_factory

    with session_factory(database_url)() as session:
        yield session


@pytest.fixture
def alice(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def bob(database_url: str) -> Caller:
    return make_caller(database_url)


@pytest.fixture
def admin(database_url: str) -> Caller:
    return make_caller(database_url, admin=True)
