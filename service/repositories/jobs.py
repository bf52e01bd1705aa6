"""Jobs: tenant-scoped reads, idempotency-key lookup and keyset listing.

Read queries only: every state change of a job (create, dispatch, cancel, claim, finish, re-queue)
is in service/lifecycle.

Routes that change a job load the ORM `Job` (`get_job`). The read routes (GET /v1/jobs/{id}, GET
/v1/jobs) get plain dicts of the columns a response shows (`get_job_row`, `list_jobs`): a Core select
builds no ORM object per job, which is most of the cost of reading one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, BindParameter, Integer, Select, bindparam, select
from sqlalchemy.orm import Session

from service.models import Job
from service.pagination import older_than

_jobs = Job.__table__
# Every column but the worker's bookkeeping, keyed by the ORM attribute names: the `metadata` column
# is `Job.job_metadata`.
_ROW_COLUMNS = [
    column.label("job_metadata") if column.name == "metadata" else column
    for column in _jobs.c
    if column.name not in ("request_hash", "celery_task_id", "worker_id")
]
_ROWS: Select[Any] = select(*_ROW_COLUMNS)
# Built once, so that a read only looks its compiled form up in the engine's statement cache.
_ROW_BY_ID = _ROWS.where(_jobs.c.id == bindparam("job_id"), _jobs.c.tenant_id == bindparam("tenant_id"))


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The tenant's job, or None (another tenant's job is indistinguishable from a missing one)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_job_row(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
    """`get_job` for reading only: the job's columns by `Job` attribute name, or None."""
    row = session.execute(_ROW_BY_ID, {"job_id": job_id, "tenant_id": tenant_id}).one_or_none()
    return None if row is None else row._asdict()


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
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first, with every (key, value) of `metadata` among the job's metadata; returns (page, has_more),
    each job as `get_job_row` gives it."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit + 1, "status": status}
    for index, (key, value) in enumerate(metadata):
        params[f"metadata_key_{index}"], params[f"metadata_value_{index}"] = key, value
    if after is not None:
        params["after_created_at"], params["after_id"] = after
    query = _list_statement(status is not None, len(metadata), after is not None)
    rows = [row._asdict() for row in session.execute(query, params).all()]
    return rows[:limit], len(rows) > limit


@lru_cache(maxsize=64)
def _list_statement(by_status: bool, metadata_filters: int, after_cursor: bool) -> Select[Any]:
    """The list query of one shape, every value a bound parameter: built once per shape, so that a page
    only looks its compiled form up in the engine's statement cache."""
    query = _ROWS.where(_jobs.c.tenant_id == bindparam("tenant_id"))
    if by_status:
        query = query.where(_jobs.c.status == bindparam("status"))
    for index in range(metadata_filters):
        # ->> on Postgres, json_extract on SQLite: the same filter on both databases.
        value = _jobs.c["metadata"][bindparam(f"metadata_key_{index}", type_=JSON.JSONStrIndexType())].as_string()
        query = query.where(value == bindparam(f"metadata_value_{index}"))
    if after_cursor:
        cursor: tuple[BindParameter[Any], BindParameter[Any]] = (bindparam("after_created_at"), bindparam("after_id"))
        query = query.where(older_than(_jobs.c.created_at, _jobs.c.id, cursor))
    limit = bindparam("limit", type_=Integer)
    return query.order_by(_jobs.c.created_at.desc(), _jobs.c.id.desc()).limit(limit)
