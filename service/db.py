"""Database engines and sessions shared by the API and the workers.

Engines are created once per URL. SQLite (the embedded default) gets its parent directory
created, WAL journaling and enforced foreign keys; server databases get pre-ping so a restarted
Postgres does not surface as a failed request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings, get_settings

# Connections per server-database engine; the API admits fewer concurrent requests (inflight_limit).
POOL_SIZE, MAX_OVERFLOW = 10, 20
POOL_CAPACITY = POOL_SIZE + MAX_OVERFLOW

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def _prepare_sqlite(url: str) -> dict[str, Any]:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # The API serves requests from a thread pool; SQLite must allow that and wait on locks.
    return {"check_same_thread": False, "timeout": 30}


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """A new engine for `url` (not cached); prefer `get_engine`."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args=_prepare_sqlite(url))
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)


def get_engine(url: str | None = None) -> Engine:
    """The cached engine for `url` (default: the configured database_url)."""
    url = url or get_settings().database_url
    with _lock:
        if url not in _engines:
            _engines[url] = create_db_engine(url)
        return _engines[url]


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The cached sessionmaker for `url`; objects stay usable after commit."""
    url = url or get_settings().database_url
    engine = get_engine(url)
    with _lock:
        if url not in _factories:
            _factories[url] = sessionmaker(engine, expire_on_commit=False)
        return _factories[url]


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    """FastAPI dependency: one session per request, closed afterwards (routes commit explicitly).

    Webhook events the request's transitions record (a queued job cancelled) are sent, once committed,
    on the broker of these settings."""
    from service.queue import webhook_sender
    from service.webhooks.events import use_delivery_sender

    with session_factory(settings.database_url)() as session:
        use_delivery_sender(session, webhook_sender(settings))
        yield session


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """Transactional scope for workers/CLI: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
