"""Recovering a job whose worker died (its heartbeat went stale): re-queue, cancel, pause or fail it,
and re-send the task of a re-queued job. Called by the reaper (worker/reaper.py).

A job in running/cancelling/pausing whose heartbeat is older than the cutoff gets a `stalled` event
(and its attempt the `stalled` outcome) and then:
  - a job being cancelled becomes `cancelled` (nobody needs to finish it);
  - a job being paused becomes `paused` (its tenant asked it to stop; job.paused is recorded): a
    resume continues from its newest checkpoint, which may be older than the step it had reached;
  - otherwise, while the attempts that did not end in a pause are fewer than max_attempts, it goes
    back to `queued` (`requeued` event) and its task is sent again; the next worker resumes from the
    last checkpoint (pauses do not use up attempts: they are the tenant's doing, not failures);
  - otherwise it becomes `failed` with "gave up after N attempts".
Every transition is a conditional UPDATE that re-checks the staleness and the attempt, so two
reapers (the periodic one and one run at worker start-up) never act twice on the same job, and a
heartbeat that arrives meanwhile wins.

A multi-node attempt that lost one of its nodes ends the same way (`requeue_after_node_loss`, called
by its node 0, with a `node_lost` event instead of `stalled`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.lifecycle.pause import mark_paused
from service.lifecycle.plumbing import ACTIVE_STATUSES, retry_db
from service.models import Job, JobAttempt, JobEvent, JobStatus, utcnow
from service.settings import Settings
from service.webhooks.events import record_job_status_event

log = logging.getLogger(__name__)

Enqueue = Callable[[str], str | None]  # sends worker.train_job for a job id, returns the task id


def _stale_condition(cutoff: datetime) -> Any:
    return or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)


def find_stale_jobs(session: Session, cutoff: datetime) -> list[uuid.UUID]:
    """Active jobs whose heartbeat is missing or older than `cutoff`, oldest job first."""
    rows = session.execute(
        select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), _stale_condition(cutoff)).order_by(Job.created_at)
    )
    return list(rows.scalars())


def _decide(job: Job, max_attempts: int, paused_attempts: int) -> tuple[JobStatus, str]:
    if job.status == JobStatus.cancelling.value:
        return (
            JobStatus.cancelled,
            "cancelled: its worker stopped responding while the job was being cancelled",
        )
    if job.status == JobStatus.pausing.value:
        return JobStatus.paused, "paused: its worker stopped responding while the job was being paused"
    used = job.attempts - paused_attempts
    if used < max_attempts:
        return JobStatus.queued, f"re-queued for attempt {used + 1} of {max_attempts}"
    return JobStatus.failed, f"gave up after {used} attempts"


def _paused_attempts(session: Session, job_id: uuid.UUID) -> int:
    outcome = JobAttempt.outcome == JobStatus.paused.value
    return int(session.scalar(select(func.count()).where(JobAttempt.job_id == job_id, outcome)) or 0)


def reap_job(
    sessions: sessionmaker[Session], job_id: uuid.UUID, *, cutoff: datetime, settings: Settings
) -> JobStatus | None:
    """Re-queue, cancel or fail one stale job in one (retried) transaction; returns its new status,
    or None if it is no longer stale (a heartbeat or another reaper got there first)."""

    def operation() -> JobStatus | None:
        with sessions.begin() as session:
            return _reap_one(session, job_id, cutoff, settings)

    return retry_db(operation, what=f"reaping job {job_id}")


def _reap_one(session: Session, job_id: uuid.UUID, cutoff: datetime, settings: Settings) -> JobStatus | None:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in ACTIVE_STATUSES:
        return None
    last_beat = job.heartbeat_at.isoformat() if job.heartbeat_at else "never"
    limit = f"{settings.stale_after_seconds:g}s"
    reason = f"no heartbeat from worker {job.worker_id} since {last_beat} (limit {limit})"
    payload = {"attempt": job.attempts, "worker_id": job.worker_id, "last_heartbeat": last_beat}
    return _end_attempt(session, job, settings, reason, "stalled", payload, _stale_condition(cutoff))


def requeue_after_node_loss(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    attempt: int,
    *,
    reason: str,
    lost_nodes: list[int],
    settings: Settings,
) -> JobStatus | None:
    """End a multi-node attempt that lost a node as a dead worker's would end (`node_lost` event and
    attempt outcome): re-queued to resume from the last checkpoint, or cancelled, paused or failed as
    the reaper decides. None if the attempt no longer owns the job."""

    def operation() -> JobStatus | None:
        with sessions.begin() as session:
            job = session.get(Job, job_id, populate_existing=True)
            if job is None or job.status not in ACTIVE_STATUSES or job.attempts != attempt:
                return None
            payload = {"attempt": attempt, "worker_id": job.worker_id, "lost_nodes": lost_nodes}
            return _end_attempt(session, job, settings, reason, "node_lost", payload, None)

    return retry_db(operation, what=f"re-queueing job {job_id} after a lost node")


def _end_attempt(
    session: Session,
    job: Job,
    settings: Settings,
    reason: str,
    kind: str,
    payload: dict[str, Any],
    guard: Any,
) -> JobStatus | None:
    """Move an active job whose attempt died (reason: why) to queued, cancelled, paused or failed.

    The UPDATE re-checks the status and attempt it read (and `guard`, e.g. the staleness), so a
    heartbeat, a finishing attempt or another reaper that got there first wins."""
    job_id = job.id
    now = utcnow()
    new_status, outcome = _decide(job, settings.max_attempts, _paused_attempts(session, job_id))
    values: dict[str, Any] = {"status": new_status.value, "worker_id": None}
    if new_status is JobStatus.paused:
        values.update(heartbeat_at=None, celery_task_id=None)  # resumed by a new dispatch
    if new_status is JobStatus.failed:
        values.update(error=f"{outcome}; last: {reason}", finished_at=now)
    elif new_status is JobStatus.cancelled:
        values.update(finished_at=now)
    conditions = [Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts]
    if guard is not None:
        conditions.append(guard)
    # Session.execute types every result as a Result; an UPDATE's is a CursorResult, which counts rows.
    changed = cast(
        "CursorResult[Any]",
        session.execute(
            update(Job).where(*conditions).values(**values).execution_options(synchronize_session=False)
        ),
    ).rowcount
    if changed != 1:
        return None
    session.add(JobEvent(job_id=job_id, kind=kind, step=job.current_step, message=reason, payload=payload))
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.attempt == job.attempts, JobAttempt.ended_at.is_(None))
        .values(outcome=kind, error=reason, ended_at=now)
        .execution_options(synchronize_session=False)
    )
    if new_status is JobStatus.paused:
        mark_paused(session, job_id, step=job.current_step, message=outcome, payload=payload)
        return new_status
    event = "requeued" if new_status is JobStatus.queued else new_status.value
    session.add(JobEvent(job_id=job_id, kind=event, step=job.current_step, message=outcome, payload=payload))
    record_job_status_event(session, job_id)  # job.failed or job.cancelled; nothing for a re-queue
    return new_status


def dispatch_requeued(sessions: sessionmaker[Session], job_id: uuid.UUID, enqueue: Enqueue) -> None:
    """Send the task of a job `reap_job` re-queued and record its task id.

    If the broker cannot be reached the job is put back as stale-running (heartbeat NULL), so the
    next reaper run tries again instead of leaving it queued with no message in the broker."""
    try:
        task_id = enqueue(str(job_id))
    except Exception:
        log.exception("could not enqueue job %s; it will be retried by the next reaper run", job_id)
        with sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued.value)
                .values(status=JobStatus.running.value, heartbeat_at=None)
                .execution_options(synchronize_session=False)
            )
        return
    if task_id:
        with sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(celery_task_id=task_id)
                .execution_options(synchronize_session=False)
            )
