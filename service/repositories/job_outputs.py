"""What a running job produces: per-step metrics, lifecycle events and checkpoints.

The worker writes through the `record_*` functions (metrics and checkpoints are upserts keyed
by (job_id, step), so a retried step overwrites instead of duplicating); the API reads through
the `list_*` / `get_*` functions. Writers flush; the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.models import Checkpoint, JobEvent, JobMetric, utcnow


def _insert(session: Session, model: Any) -> Any:
    """Dialect-specific INSERT supporting ON CONFLICT (Postgres and SQLite both do)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def record_metrics(session: Session, job_id: uuid.UUID, step: int, metrics: dict[str, Any]) -> None:
    """Upsert the metrics of one step."""
    stmt = _insert(session, JobMetric).values(job_id=job_id, step=step, metrics=metrics, created_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "step"],
        set_={"metrics": stmt.excluded.metrics, "created_at": stmt.excluded.created_at},
    )
    session.execute(stmt)


def record_event(
    session: Session,
    job_id: uuid.UUID,
    kind: str,
    *,
    step: int | None = None,
    message: str = "",
    payload: dict[str, Any] | None = None,
) -> JobEvent:
    """Append one lifecycle event."""
    event = JobEvent(job_id=job_id, kind=kind, step=step, message=message, payload=payload or {})
    session.add(event)
    session.flush()
    return event


def record_checkpoint(
    session: Session,
    job_id: uuid.UUID,
    step: int,
    *,
    uri: str,
    size_bytes: int = 0,
    metrics: dict[str, Any] | None = None,
    eval_score: float | None = None,
) -> None:
    """Upsert the checkpoint of one step (a re-saved step replaces the row's data)."""
    values = {"uri": uri, "size_bytes": size_bytes, "metrics": metrics or {}, "eval_score": eval_score}
    stmt = _insert(session, Checkpoint).values(id=uuid.uuid4(), job_id=job_id, step=step, created_at=utcnow(), **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "step"], set_={k: getattr(stmt.excluded, k) for k in values}
    )
    session.execute(stmt)


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
