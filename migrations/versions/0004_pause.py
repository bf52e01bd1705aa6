"""Pausing and resuming jobs: the statuses `pausing` and `paused` join the jobs' status CHECK.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from service.models: a revision must keep building the schema of
# its own time when the models change later.
STATUSES_BEFORE = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
STATUSES_AFTER = ("queued", "running", "cancelling", "pausing", "paused", "succeeded", "failed", "cancelled")


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _replace_status_check(statuses: Sequence[str]) -> None:
    # SQLite cannot alter a constraint in place: batch mode copies the table with the new CHECK
    # (on Postgres the same calls are plain ALTER TABLE statements).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", _status_check(statuses))


def upgrade() -> None:
    _replace_status_check(STATUSES_AFTER)


def downgrade() -> None:
    # A paused job has no status before this revision: back to queued, which resumes it; a pausing
    # one is still running under its worker.
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'paused'")
    op.execute("UPDATE jobs SET status = 'running' WHERE status = 'pausing'")
    _replace_status_check(STATUSES_BEFORE)
