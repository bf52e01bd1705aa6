"""Helpers of the reliability tests: callers with API keys, problem assertions, row counts, polling."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.db import session_factory
from service.repositories.tenants import create_api_key, get_or_create_tenant

UPLOAD_LIMIT = 64 * 1024  # REMIX_MAX_UPLOAD_BYTES of the reliability suite's API

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_PG = os.environ.get("REMIX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# Every table the service writes; "nothing written" means none of these counts moved.
TABLES = (
    "tenants",
    "api_keys",
    "datasets",
    "jobs",
    "job_attempts",
    "job_metrics",
    "job_events",
    "checkpoints",
)


def create_database(admin_url: str = ADMIN_PG) -> str:
    """A new empty database on the server of `admin_url`; returns its SQLAlchemy URL."""
    name = f"remix_rel_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(url: str, admin_url: str = ADMIN_PG) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Caller:
    tenant_id: uuid.UUID
    key: str
    headers: dict[str, str]


def make_caller(database_url: str, *, admin: bool = False) -> Caller:
    with session_factory(database_url)() as session:
        tenant = get_or_create_tenant(session, f"tenant-{uuid.uuid4().hex[:10]}")
        _, key = create_api_key(session, tenant, name="reliability", is_admin=admin)
        return Caller(tenant.id, key, {"Authorization": f"Bearer {key}"})


def assert_problem(response: Any, status: int, detail_part: str = "") -> dict[str, Any]:
    """An RFC 9457 problem document with this status whose detail contains `detail_part`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    assert detail_part in body["detail"], body["detail"]
    return body


def row_counts(session: Session) -> dict[str, int]:
    """Rows per service table, read in a fresh transaction."""
    session.rollback()
    return {table: int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}


def files_under(root: str | Path) -> list[str]:
    base = Path(root)
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail[-6000:]}")
