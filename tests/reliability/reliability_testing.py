"""Helpers of the reliability tests: callers with API keys, problem assertions, row counts, polling."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session
from testing_support import (
    ADMIN_PG,
    REPO_ROOT,
    Caller,
    assert_problem,
    create_database,
    drop_database,
    free_port,
    make_caller,
    wait_for,
)

__all__ = [
    "ADMIN_PG",
    "REPO_ROOT",
    "Caller",
    "assert_problem",
    "create_database",
    "drop_database",
    "free_port",
    "make_caller",
    "wait_for",
]

UPLOAD_LIMIT = 64 * 1024  # REMIX_MAX_UPLOAD_BYTES of the reliability suite's API

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
    "webhook_endpoints",
    "webhook_events",
    "webhook_deliveries",
)


def row_counts(session: Session) -> dict[str, int]:
    """Rows per service table, read in a fresh transaction."""
    session.rollback()
    return {table: int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}


def files_under(root: str | Path) -> list[str]:
    base = Path(root)
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
