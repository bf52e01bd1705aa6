"""What a running job produced, read by the API: per-step metrics, lifecycle events and checkpoints.

Read queries only. The worker writes these rows through its attempt's `service.lifecycle.JobWriter`
(metrics and checkpoints upserted by (job_id, step), per-step events by (job_id, kind, step)).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Checkpoint, JobEvent, JobMetric


def list_metrics(
    session: Session, job_id: uuid.UUID, *, from_step: int | None, to_step: int | None, limit: int
) -> tuple[list[JobMetric], bool]:
    """Metrics with from_step <= step <= to_step, ascending; returns (page, has_more)."""
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    if from_step is not None:
        query = query.where(JobMetric.step >= from_step)
    if to_step is not None:
        query = query.where(JobMetric.step <= to_step)
    rows = list(session.scalars(query.order_by(JobMetric.step).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


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
