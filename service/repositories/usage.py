"""Usage reads: totals and per-job sums of the per-(job, step) usage rows the workers write
(service/lifecycle JobWriter.record_step), for a tenant, a job, or a time window of recorded_at."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from service.models import JobUsage


@dataclass(frozen=True)
class UsageTotals:
    steps: int = 0
    fresh_rollouts: int = 0
    generated_tokens: int = 0
    trained_tokens: int = 0
    device_seconds: float = 0.0


_SUMS = (
    func.count(),
    func.coalesce(func.sum(JobUsage.fresh_rollouts), 0),
    func.coalesce(func.sum(JobUsage.generated_tokens), 0),
    func.coalesce(func.sum(JobUsage.trained_tokens), 0),
    func.coalesce(func.sum(JobUsage.device_seconds), 0.0),
)


def _totals(row: tuple[Any, ...]) -> UsageTotals:
    """A row of `_SUMS` (counts and sums the database returns as numbers) as totals."""
    steps, rollouts, generated, trained, seconds = row
    return UsageTotals(int(steps), int(rollouts), int(generated), int(trained), float(seconds))


def _window(tenant_id: uuid.UUID, start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions = [JobUsage.tenant_id == tenant_id]
    if start is not None:
        conditions.append(JobUsage.recorded_at >= start)
    if end is not None:
        conditions.append(JobUsage.recorded_at < end)
    return conditions


def tenant_totals(
    session: Session, tenant_id: uuid.UUID, *, start: datetime | None = None, end: datetime | None = None
) -> UsageTotals:
    """The tenant's usage with start <= recorded_at < end (all of it without bounds)."""
    return _totals(tuple(session.execute(select(*_SUMS).where(*_window(tenant_id, start, end))).one()))


def per_job(
    session: Session, tenant_id: uuid.UUID, *, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[uuid.UUID, UsageTotals]]:
    """The same window summed per job, jobs with any usage in it only, by job id."""
    query = (
        select(JobUsage.job_id, *_SUMS)
        .where(*_window(tenant_id, start, end))
        .group_by(JobUsage.job_id)
        .order_by(JobUsage.job_id)
    )
    return [(row[0], _totals(tuple(row[1:]))) for row in session.execute(query)]


def job_totals(session: Session, job_id: uuid.UUID) -> UsageTotals:
    return _totals(tuple(session.execute(select(*_SUMS).where(JobUsage.job_id == job_id)).one()))
