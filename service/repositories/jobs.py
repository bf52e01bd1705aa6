"""Jobs: tenant-scoped reads, idempotency-key lookup and keyset listing.

Read queries only: every state change of a job (create, dispatch, cancel, claim, finish, re-queue)
is in service/lifecycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Job
from service.pagination import older_than


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The tenant's job, or None (another tenant's job is indistinguishable from a missing one)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_job_status(session: Session, job_id: uuid.UUID) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def find_by_idempotency_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def list_jobs(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    metadata: Sequence[tuple[str, str]] = (),
) -> tuple[list[Job], bool]:
    """Newest first, with every (key, value) of `metadata` among the job's metadata; returns (page, has_more)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    for key, value in metadata:
        # ->> on Postgres, json_extract on SQLite: the same filter on both databases.
        query = query.where(Job.job_metadata[key].as_string() == value)
    if after is not None:
        query = query.where(older_than(Job.created_at, Job.id, after))
    rows = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
