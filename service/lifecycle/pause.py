"""Pausing a job and resuming it at the tenant's request (API side, in the request session; commits),
and the step every pause ends with: the job becoming `paused` (`mark_paused`).

A queued job is paused at once: nothing was trained since its last checkpoint, so nothing needs saving,
and its message in the broker finds it no longer queued and is dropped by the worker's claim. A running
job becomes `pausing`; its worker stops at the next step boundary, saves a checkpoint of the step
reached and ends its attempt with `JobWriter.pause` (pausing -> paused), which frees the worker and
stops the heartbeats. A pausing job whose worker dies is paused by the reaper (service/lifecycle/requeue.py)
and resumes from its newest checkpoint. Every change is a conditional UPDATE, so a concurrent claim,
finish or cancellation is never overwritten.

Resuming puts a paused job back to `queued` with no task id, and the caller dispatches it exactly as a new
job is dispatched (`dispatch_job`); the claiming worker resumes from the newest checkpoint, with the
replay buffer, optimizer, step, reincarnation phase and random state of the pause. Resuming a job that is
queued or running already is answered as done (idempotent): the job is, or will be, training.

Each time a job becomes paused the job.paused webhook event is recorded in that transaction, keyed by the
id of that pause's 'paused' event row, so every pause is reported once.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.lifecycle.plumbing import rowcount
from service.models import Job, JobEvent, JobStatus
from service.webhooks import WebhookEventType
from service.webhooks.events import record_job_event


class PauseOutcome(enum.StrEnum):
    paused = "paused"  # was queued: paused at once
    requested = "requested"  # was running: the worker checkpoints and stops at the next step boundary
    already = "already"  # pausing or paused already
    refused = "refused"  # cancelling, succeeded, failed or cancelled: nothing to pause


class ResumeOutcome(enum.StrEnum):
    resumed = "resumed"  # was paused: queued again, to be dispatched by the caller
    already = "already"  # queued or running already
    refused = "refused"  # pausing (not stopped yet), cancelling, or finished


OutcomeT = TypeVar("OutcomeT", PauseOutcome, ResumeOutcome)


def mark_paused(session: Session, job_id: uuid.UUID, *, step: int, message: str, payload: dict[str, Any]) -> JobEvent:
    """Record the 'paused' event and the job.paused webhook event of a job that has just become paused
    (no commit; the caller's UPDATE made it so in this transaction)."""
    event = JobEvent(job_id=job_id, kind=JobStatus.paused.value, step=step, message=message, payload=payload)
    session.add(event)
    session.flush()  # the event's id names this pause in the webhook event's dedupe key
    record_job_event(
        session, job_id, WebhookEventType.job_paused, f"{WebhookEventType.job_paused.value}:{job_id}:{event.id}"
    )
    return event


def request_pause(session: Session, job: Job) -> PauseOutcome:
    """Pause a queued job at once, or ask the worker of a running one to pause (commits)."""
    paused = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.paused.value, celery_task_id=None)
    )
    if rowcount(paused) == 1:
        mark_paused(session, job.id, step=job.current_step, message="paused while queued", payload={})
        return _commit_outcome(session, job, PauseOutcome.paused)
    requested = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.running.value)
        .values(status=JobStatus.pausing.value)
    )
    if rowcount(requested) == 1:
        session.add(
            JobEvent(
                job_id=job.id,
                kind="pause_requested",
                step=job.current_step,
                message="pause requested: a checkpoint of the step reached is saved first",
            )
        )
        return _commit_outcome(session, job, PauseOutcome.requested)
    session.commit()
    session.refresh(job)
    if job.status in (JobStatus.pausing.value, JobStatus.paused.value):
        return PauseOutcome.already
    if job.status in (JobStatus.queued.value, JobStatus.running.value):  # a claim or a re-queue raced us
        return request_pause(session, job)
    return PauseOutcome.refused


def request_resume(session: Session, job: Job) -> ResumeOutcome:
    """Queue a paused job again, with no task id so that the caller's `dispatch_job` sends it (commits)."""
    resumed = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.paused.value)
        .values(status=JobStatus.queued.value, celery_task_id=None, worker_id=None, heartbeat_at=None)
    )
    if rowcount(resumed) == 1:
        session.add(
            JobEvent(
                job_id=job.id,
                kind="resume_requested",
                step=job.current_step,
                message="resumed: queued again, to continue from its newest checkpoint",
            )
        )
        return _commit_outcome(session, job, ResumeOutcome.resumed)
    session.commit()
    session.refresh(job)
    if job.status in (JobStatus.queued.value, JobStatus.running.value):
        return ResumeOutcome.already
    return ResumeOutcome.refused


def _commit_outcome(session: Session, job: Job, outcome: OutcomeT) -> OutcomeT:
    session.commit()
    session.refresh(job)
    return outcome
