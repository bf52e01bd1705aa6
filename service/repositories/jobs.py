"""Jobs: idempotent creation, tenant-scoped reads, keyset listing and cancellation.

Idempotency is enforced by the UNIQUE (tenant_id, idempotency_key) constraint, not by a
read-then-write check: concurrent creations with one key all end on the same row.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import Job, JobEvent, JobStatus
from service.pagination import older_than


class IdempotencyKeyReused(Exception):
    """The key was already used by this tenant for a request with a different body."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"idempotency key already used for job {job.id}")
        self.job = job


@dataclass(frozen=True)
class NewJob:
    """Everything needed to insert a job row."""

    tenant_id: uuid.UUID
    name: str
    base_model: str
    dataset_id: uuid.UUID | None
    config: dict[str, Any]
    total_steps: int
    idempotency_key: str | None
    request_hash: str


def _rowcount(result: object) -> int:
    """Rows matched by an UPDATE (CursorResult.rowcount; typed loosely by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0))


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The tenant's job, or None (another tenant's job is indistinguishable from a missing one)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_job_status(session: Session, job_id: uuid.UUID) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def find_by_idempotency_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def _replay(existing: Job, draft: NewJob) -> tuple[Job, bool]:
    if existing.request_hash != draft.request_hash:
        raise IdempotencyKeyReused(existing)
    return existing, False


def create_job(session: Session, draft: NewJob) -> tuple[Job, bool]:
    """Insert the job and its 'queued' event (commits); returns (job, created).

    With an idempotency key, a repeat of the same request returns the existing job with
    created=False, and a different request raises IdempotencyKeyReused.
    """
    if draft.idempotency_key is not None:
        existing = find_by_idempotency_key(session, draft.tenant_id, draft.idempotency_key)
        if existing is not None:
            return _replay(existing, draft)
    job = Job(
        tenant_id=draft.tenant_id,
        name=draft.name,
        status=JobStatus.queued.value,
        base_model=draft.base_model,
        dataset_id=draft.dataset_id,
        config=draft.config,
        total_steps=draft.total_steps,
        idempotency_key=draft.idempotency_key,
        request_hash=draft.request_hash,
    )
    session.add(job)
    try:
        session.flush()  # assigns the id and hits the unique constraint before the event row
        session.add(JobEvent(job_id=job.id, kind="queued", step=0, message="job accepted"))
        session.commit()
    except IntegrityError:
        # Lost a race with a concurrent request carrying the same key: return the winner's row.
        session.rollback()
        if draft.idempotency_key is None:
            raise
        existing = find_by_idempotency_key(session, draft.tenant_id, draft.idempotency_key)
        if existing is None:
            raise
        return _replay(existing, draft)
    return job, True


def claim_dispatch(session: Session, job: Job) -> str | None:
    """Reserve the right to send this job's task (commits); returns the task id to use, or None
    if another request already dispatched it. Makes concurrent replays send exactly one message."""
    task_id = str(uuid.uuid4())
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.celery_task_id.is_(None), Job.status == JobStatus.queued.value)
        .values(celery_task_id=task_id)
    )
    session.commit()
    if _rowcount(result) != 1:
        return None
    job.celery_task_id = task_id
    return task_id


def release_dispatch(session: Session, job: Job, task_id: str) -> None:
    """Undo `claim_dispatch` after a failed send so a retry dispatches again (commits)."""
    session.execute(update(Job).where(Job.id == job.id, Job.celery_task_id == task_id).values(celery_task_id=None))
    session.commit()
    job.celery_task_id = None


def list_jobs(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> tuple[list[Job], bool]:
    """Newest first; returns (page, has_more)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        query = query.where(older_than(Job.created_at, Job.id, after))
    rows = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


class CancelOutcome(enum.StrEnum):
    cancelled = "cancelled"  # was queued: no worker will ever claim it
    requested = "requested"  # was running: the worker stops at the next step boundary
    already_cancelling = "already_cancelling"
    terminal = "terminal"  # already succeeded, failed or cancelled


def request_cancel(session: Session, job: Job, *, checkpoint: bool) -> CancelOutcome:
    """Cancel with conditional UPDATEs so a concurrent worker claim cannot be overwritten (commits)."""
    now = datetime.now(UTC)
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now)
    )
    if _rowcount(cancelled) == 1:
        session.add(JobEvent(job_id=job.id, kind="cancelled", step=job.current_step, message="cancelled while queued"))
        return _commit_outcome(session, job, CancelOutcome.cancelled)
    requested = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.running.value)
        .values(status=JobStatus.cancelling.value, cancel_requested=True, checkpoint_on_cancel=checkpoint)
    )
    if _rowcount(requested) == 1:
        message = "cancellation requested" + (" (checkpoint first)" if checkpoint else "")
        session.add(
            JobEvent(
                job_id=job.id,
                kind="cancel_requested",
                step=job.current_step,
                message=message,
                payload={"checkpoint": checkpoint},
            )
        )
        return _commit_outcome(session, job, CancelOutcome.requested)
    session.commit()
    session.refresh(job)
    if job.status == JobStatus.cancelling.value:
        return CancelOutcome.already_cancelling
    return CancelOutcome.terminal


def _commit_outcome(session: Session, job: Job, outcome: CancelOutcome) -> CancelOutcome:
    session.commit()
    session.refresh(job)
    return outcome


# --------------------------------------------------------------------------- worker-side transitions
# These flush only: the worker's transaction (service.db.session_scope) commits.


def claim_job(session: Session, job_id: uuid.UUID, *, worker_id: str) -> bool:
    """queued -> running, atomically; False if the job was not queued (cancelled, already claimed)."""
    now = datetime.now(UTC)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(
            status=JobStatus.running.value,
            worker_id=worker_id,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            heartbeat_at=now,
        )
    )
    return _rowcount(result) == 1


def finish_job(
    session: Session,
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    error: str | None = None,
    summary: dict[str, Any] | None = None,
) -> bool:
    """running/cancelling -> a terminal status; False if the job was not active."""
    if not status.is_terminal:
        raise ValueError(f"{status} is not a terminal status")
    values: dict[str, Any] = {"status": status.value, "finished_at": datetime.now(UTC), "error": error}
    if summary is not None:
        values["summary"] = summary
    active = (JobStatus.running.value, JobStatus.cancelling.value)
    result = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(active)).values(**values))
    return _rowcount(result) == 1
