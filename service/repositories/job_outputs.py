"""What a running job produced, read by the API: per-step metrics, lifecycle events and checkpoints.

Read queries only. The worker writes these rows through its attempt's `service.lifecycle.JobWriter`
(metrics and checkpoints upserted by (job_id, step), per-step events by (job_id, kind, step)).
`list_metrics`, which a job's followers poll, is one Core select that also checks the job's owner, and
returns plain dicts (no ORM objects).
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, select
from sqlalchemy.orm import Session

from service.models import Checkpoint, Job, JobEvent, JobMetric

_jobs, _metrics = Job.__table__, JobMetric.__table__
_METRIC_ROWS = select(_metrics.c.step, _metrics.c.metrics, _metrics.c.created_at)


def list_metrics(
    session: Session,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    from_step: int | None,
    to_step: int | None,
    limit: int,
) -> tuple[list[dict[str, Any]], bool] | None:
    """The tenant's job's metrics with from_step <= step <= to_step, ascending, as {step, metrics,
    created_at}; returns (page, has_more), or None if the tenant has no such job."""
    query = _metrics_statement(from_step is not None, to_step is not None)
    params = {"tenant_id": tenant_id, "job_id": job_id, "from_step": from_step, "to_step": to_step, "limit": limit + 1}
    result = session.execute(query, params).all()
    if not result:
        return None
    rows = [row._asdict() for row in result if row.step is not None]
    return rows[:limit], len(rows) > limit


@lru_cache(maxsize=4)
def _metrics_statement(from_step: bool, to_step: bool) -> Select[Any]:
    """The metrics query with or without each bound, values as bound parameters: built once per shape."""
    steps = [_metrics.c.job_id == _jobs.c.id]
    if from_step:
        steps.append(_metrics.c.step >= bindparam("from_step"))
    if to_step:
        steps.append(_metrics.c.step <= bindparam("to_step"))
    # The job outer-joined to its steps: no row at all means no such job, a row without a step a job
    # without metrics in the range. One round trip where checking the job first would take two.
    return (
        _METRIC_ROWS.select_from(_jobs.outerjoin(_metrics, and_(*steps)))
        .where(_jobs.c.id == bindparam("job_id"), _jobs.c.tenant_id == bindparam("tenant_id"))
        .order_by(_metrics.c.step)
        .limit(bindparam("limit", type_=Integer))
    )


def metrics_after(session: Session, job_id: uuid.UUID, step: int, limit: int) -> list[JobMetric]:
    query = select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > step)
    return list(session.scalars(query.order_by(JobMetric.step).limit(limit)))


def list_events(session: Session, job_id: uuid.UUID, *, after: int | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Events with id > after, ascending; returns (page, has_more)."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    rows = list(session.scalars(query.order_by(JobEvent.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_checkpoints(session: Session, job_id: uuid.UUID) -> list[Checkpoint]:
    return list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)))


def get_checkpoint(session: Session, job_id: uuid.UUID, step: int) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))
