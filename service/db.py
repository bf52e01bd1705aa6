"""Database engines and sessions shared by the API and the workers.

Engines are created once per URL. SQLite (the embedded default) gets its parent directory
created, WAL journaling and enforced foreign keys.

Server-database connections are not pinged on every checkout (that is one more round trip per
request): a connection that sat idle in the pool for IDLE_PING_SECONDS is pinged before reuse, and
replaced if dead, so a Postgres restart during a quiet period costs no request; connections are also
recycled after POOL_RECYCLE_SECONDS. A connection that dies while busy fails its request with 503
(service/errors.py), and SQLAlchemy then discards every connection older than the failure, so the
next requests get fresh ones.

JSON columns are parsed with pydantic-core's parser (`from_json`), which gives the same values as the
standard library's `json.loads` in a third of the time: a metrics page is mostly JSON to parse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic_core import from_json
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings

# Connections per server-database engine; the API admits fewer concurrent requests (inflight_limit).
POOL_SIZE, MAX_OVERFLOW = 10, 20
POOL_CAPACITY = POOL_SIZE + MAX_OVERFLOW
# Under load a pooled connection is reused within milliseconds and never pinged; one idle this long
# may have been cut by a database restart or a proxy's idle timeout.
IDLE_PING_SECONDS = 2.0
POOL_RECYCLE_SECONDS = 1800

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


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    checked_in_at = record.info.get("checked_in_at")
    if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as error:
        # The pool discards this connection and retries the checkout with a new one.
        raise DisconnectionError(f"idle pooled connection is dead: {error}") from error


def create_db_engine(url: str) -> Engine:
    """A new engine for `url` (not cached); prefer `get_engine`."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args=_prepare_sqlite(url), json_deserializer=from_json)
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_use_lifo=True,
        json_deserializer=from_json,
    )
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


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


def _read_only_factory(url: str) -> sessionmaker[Session]:
    """Sessions whose connections run in autocommit: each read is one round trip, with no BEGIN before
    it and no ROLLBACK after it (psycopg switches autocommit on the client, without a round trip)."""
    key = f"read-only:{url}"
    engine = get_engine(url)
    with _lock:
        if key not in _factories:
            _factories[key] = sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            )
        return _factories[key]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, closed afterwards (routes commit explicitly).

    GET and HEAD requests only read, and their session runs in autocommit on a server database. A
    coroutine, so that opening it costs no trip to a worker thread: the session connects on its first
    query, in the route's thread; closing it returns the connection to the pool, in a thread when the
    request used one (unless the route closed it already: `read_in_thread`)."""
    from service.queue import webhook_sender
    from service.webhooks.events import use_delivery_sender

    settings = request.app.state.settings
    url = settings.database_url
    reads_only = request.method in ("GET", "HEAD") and not url.startswith("sqlite")
    session = (_read_only_factory(url) if reads_only else session_factory(url))()
    if not reads_only:  # webhook events a write records (a queued job cancelled) are sent once committed
        use_delivery_sender(session, webhook_sender(settings))
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


T = TypeVar("T")
A = ParamSpec("A")


async def read_in_thread(
    session: Session, read: Callable[Concatenate[Session, A], T], *args: A.args, **kwargs: A.kwargs
) -> T:
    """`read(session, ...)` in a worker thread, then the session closed in that thread: a read route's one
    trip to a thread. A synchronous route makes three: the route itself, FastAPI's validation of what it
    returned, and closing its session (get_session). The result must not need the session any more."""

    def read_then_close() -> T:
        try:
            return read(session, *args, **kwargs)
        finally:
            session.close()

    return await run_in_threadpool(read_then_close)


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
