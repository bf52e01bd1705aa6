"""Creating a job (-> queued, with its 'queued' event) and dispatching its task exactly once.

Both run in the API's request session and commit. Idempotency is enforced by the UNIQUE
(tenant_id, idempotency_key) constraint, not by a read-then-write check: concurrent creations with
one key all end on the same row. Dispatch reserves a task id with a conditional UPDATE before the
message is sent, so concurrent replays of one request send one message, and a failed send releases
the reservation so that a retry dispatches again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.lifecycle.plumbing import rowcount
from service.models import Job, JobEvent, JobStatus
from service.repositories.jobs import find_by_idempotency_key


class IdempotencyKeyReused(Exception):
    """The key was already used by this tenant for a request with a different body."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"idempotency key already used for job {job.id}")
        self.job = job


class DispatchFailed(Exception):
    """Sending the task failed (the cause is the broker's error); the job stays queued, undispatched."""


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
    metadata: dict[str, str] = field(default_factory=dict)


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
        job_metadata=dict(draft.metadata),
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


def dispatch_job(session: Session, job: Job, send: Callable[[str], object]) -> str | None:
    """Send the task of a queued, never dispatched job once (commits); returns its task id.

    Returns None if another request already dispatched it. `send(task_id)` publishes the message;
    if it raises, the reservation is released (a retry of the request dispatches again) and
    DispatchFailed is raised from the send's error. Database errors propagate as they are.
    """
    task_id = _reserve_dispatch(session, job)
    if task_id is None:
        return None
    try:
        send(task_id)
    except Exception as exc:  # any broker/transport failure: the job row is safe, dispatch is retryable
        _release_dispatch(session, job, task_id)
        raise DispatchFailed(f"could not send the task of job {job.id}: {exc}") from exc
    return task_id


def _reserve_dispatch(session: Session, job: Job) -> str | None:
    """Reserve the right to send this job's task; None if another request already has it."""
    task_id = str(uuid.uuid4())
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.celery_task_id.is_(None), Job.status == JobStatus.queued.value)
        .values(celery_task_id=task_id)
    )
    session.commit()
    if rowcount(result) != 1:
        return None
    job.celery_task_id = task_id
    return task_id


def _release_dispatch(session: Session, job: Job, task_id: str) -> None:
    """Undo `_reserve_dispatch` after a failed send so a retry dispatches again."""
    session.execute(update(Job).where(Job.id == job.id, Job.celery_task_id == task_id).values(celery_task_id=None))
    session.commit()
    job.celery_task_id = None
