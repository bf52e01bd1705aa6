"""Cancelling a job at the tenant's request (API side, in the request session; commits).

A queued or paused job is cancelled at once (no worker will ever claim it: the claim requires
`queued`); a running or pausing one becomes `cancelling` and its worker stops at the next step
boundary, saving a checkpoint first with `checkpoint=True`, then finishes it as `cancelled`
(`JobWriter.finish`). Both are conditional UPDATEs, so a concurrent claim by a worker is never
overwritten. A queued or paused job's cancellation records its job.cancelled webhook event in the
same transaction.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.lifecycle.plumbing import rowcount
from service.models import Job, JobEvent, JobStatus
from service.webhooks.events import record_job_status_event


class CancelOutcome(enum.StrEnum):
    cancelled = "cancelled"  # was queued or paused: no worker will ever claim it
    requested = "requested"  # was running or pausing: the worker stops at the next step boundary
    already_cancelling = "already_cancelling"
    terminal = "terminal"  # already succeeded, failed or cancelled


def request_cancel(session: Session, job: Job, *, checkpoint: bool) -> CancelOutcome:
    """Cancel with conditional UPDATEs so a concurrent worker claim cannot be overwritten (commits)."""
    now = datetime.now(UTC)
    waiting = job.status if job.status in (JobStatus.queued.value, JobStatus.paused.value) else JobStatus.queued.value
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_((JobStatus.queued.value, JobStatus.paused.value)))
        .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now)
    )
    if rowcount(cancelled) == 1:
        message = f"cancelled while {waiting}"
        session.add(JobEvent(job_id=job.id, kind="cancelled", step=job.current_step, message=message))
        record_job_status_event(session, job.id)
        return _commit_outcome(session, job, CancelOutcome.cancelled)
    requested = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_((JobStatus.running.value, JobStatus.pausing.value)))
        .values(status=JobStatus.cancelling.value, cancel_requested=True, checkpoint_on_cancel=checkpoint)
    )
    if rowcount(requested) == 1:
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
