"""One attempt of a job, on the worker: the claim (queued -> running), the lease it holds while it
trains (heartbeat renewals), its writes (metrics, events, checkpoints, resume bookkeeping) and its
end: finish (-> succeeded | failed | cancelled) or pause (pausing -> paused). Retried through database outages of up to
`worker_db_retry_seconds` (`retry_window`), training waiting meanwhile.

The claim is a conditional `UPDATE jobs SET status='running' ... WHERE status='queued'` that records
a `JobAttempt` and a 'started' event, so a redelivered message, a job running elsewhere, or a
cancelled or finished job is left alone. Every later write of the attempt happens in one short
transaction that first renews the heartbeat with
`UPDATE jobs ... WHERE attempts = <my attempt> AND status IN (running, cancelling, pausing)`. If that matches
no row the job was re-queued (or finished) behind this worker's back, so the write is rolled back and
`LeaseLost` is raised: a worker that was presumed dead never overwrites the work of its successor.
Metrics and checkpoints are upserts keyed by (job_id, step), and so are the per-step events
(samples, evaluation, ...) by (job_id, kind, step), so a step that is re-run after a crash replaces
its rows instead of duplicating them.

The finish records the webhook event of the outcome (job.succeeded, job.failed, job.cancelled) and a
checkpoint's registration records checkpoint.created, and the pause records job.paused, each in the
transaction of the write itself.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.lifecycle.pause import mark_paused
from service.lifecycle.plumbing import ACTIVE_STATUSES, jsonable, retry_db, rowcount, upsert
from service.lifecycle.running_limit import enforce_running_limit
from service.metering import step_usage
from service.models import (
    Checkpoint,
    Job,
    JobAttempt,
    JobEvent,
    JobMetric,
    JobStatus,
    JobUsage,
    utcnow,
)
from service.webhooks.events import record_checkpoint_event, record_job_status_event

T = TypeVar("T")

# Events the trainer writes once per step. A resumed attempt re-runs the steps after its checkpoint
# and writes them again; the new one replaces the crashed attempt's row in place (same id and time),
# so an SSE follower that already received it is not sent it twice, and one arriving later gets it once.
PER_STEP_EVENT_KINDS = frozenset({"samples", "evaluation", "reincarnated", "checkpoint"})


class LeaseLost(RuntimeError):
    """The job no longer belongs to this attempt (re-queued by the reaper, or finished)."""


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt: int
    worker_id: str


def claim_job(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    *,
    worker_id: str,
    celery_task_id: str | None = None,
    retry_window: float = 0.0,
    default_max_running_jobs: int | None = None,
) -> Claim | None:
    """Atomically move a queued job to running and record the attempt; None if it was not queued.

    Raises RunningLimitReached, leaving the job queued, when its tenant already runs its limit of jobs
    (the tenant's max_running_jobs override, else `default_max_running_jobs`; None is unlimited)."""

    def operation() -> Claim | None:
        now = utcnow()
        with sessions.begin() as session:
            enforce_running_limit(session, job_id, default_max_running_jobs)
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued.value)
                .values(
                    status=JobStatus.running.value,
                    attempts=Job.attempts + 1,
                    worker_id=worker_id,
                    heartbeat_at=now,
                    started_at=func.coalesce(Job.started_at, now),
                    celery_task_id=func.coalesce(celery_task_id, Job.celery_task_id),
                    error=None,
                )
                .returning(Job.attempts, Job.current_step)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if claimed is None:
                return None
            attempt, step = claimed
            session.add(
                JobAttempt(
                    job_id=job_id,
                    attempt=attempt,
                    worker_id=worker_id,
                    celery_task_id=celery_task_id,
                    started_at=now,
                )
            )
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="started",
                    step=step,
                    message=f"attempt {attempt} started on {worker_id}",
                    payload={"attempt": attempt, "worker_id": worker_id},
                )
            )
            return Claim(job_id, attempt, worker_id)

    return retry_db(operation, what=f"claim of job {job_id}", window=retry_window)


@dataclass(frozen=True)
class JobStatusView:
    """What a running attempt needs to know about its job, read cheaply."""

    status: str
    attempts: int
    cancel_requested: bool


class JobWriter:
    """All writes of one attempt (`attempt`) of one job, each guarded by ownership and retried.

    A write that meets a database outage is retried with backoff for up to `retry_window` seconds
    (the worker's `worker_db_retry_seconds`); training waits for it meanwhile, so nothing is lost."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: uuid.UUID, attempt: int, *, retry_window: float = 0.0
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.attempt = attempt
        self.retry_window = retry_window
        self.lost = threading.Event()  # set once any write finds the job owned by someone else

    # ------------------------------------------------------------------ plumbing
    def _transaction(
        self,
        body: Callable[[Session], T],
        *,
        what: str,
        guarded: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> T:
        def operation() -> T:
            with self.sessions.begin() as session:
                if guarded:
                    self._renew(session, extra or {})
                return body(session)

        return retry_db(operation, what=what, window=self.retry_window)

    def _renew(self, session: Session, extra: Mapping[str, Any]) -> None:
        # Session.execute types every result as a Result; an UPDATE's is a CursorResult, which counts rows.
        changed = cast(
            "CursorResult[Any]",
            session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.status.in_(ACTIVE_STATUSES))
                .values(heartbeat_at=utcnow(), **extra)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if changed != 1:
            self.lost.set()
            raise LeaseLost(f"job {self.job_id} is no longer owned by attempt {self.attempt}")

    # ------------------------------------------------------------------ during training
    def heartbeat(self) -> None:
        self._transaction(lambda _s: None, what="heartbeat")

    def record_step(self, step: int, metrics: Mapping[str, Any], *, devices: int = 1) -> None:
        """Upsert the step's metrics and its usage (service/metering.py; `devices`: training processes)."""
        usage = step_usage(metrics, devices=devices)

        def body(session: Session) -> None:
            now = utcnow()
            values = {
                "job_id": self.job_id,
                "step": step,
                "metrics": jsonable(metrics),
                "created_at": now,
            }
            upsert(session, JobMetric, values, ("job_id", "step"), ("metrics", "created_at"))
            tenant = select(Job.tenant_id).where(Job.id == self.job_id).scalar_subquery()
            usage_row = {"job_id": self.job_id, "step": step, "tenant_id": tenant, "recorded_at": now, **usage}
            upsert(session, JobUsage, usage_row, ("job_id", "step"), (*usage, "recorded_at"))

        self._transaction(body, what=f"metrics of step {step}", extra={"current_step": step})

    def add_event(self, kind: str, step: int | None, message: str, payload: Mapping[str, Any]) -> None:
        """Append a lifecycle event; a per-step kind (PER_STEP_EVENT_KINDS) replaces the one of its step."""
        clean = jsonable(payload)

        def body(session: Session) -> None:
            if kind in PER_STEP_EVENT_KINDS and step is not None:
                replaced = cast(
                    "CursorResult[Any]",
                    session.execute(
                        update(JobEvent)
                        .where(JobEvent.job_id == self.job_id, JobEvent.kind == kind, JobEvent.step == step)
                        .values(message=message, payload=clean)
                        .execution_options(synchronize_session=False)
                    ),
                ).rowcount
                if replaced:
                    return
            # A fresh object per try: a rolled-back one can't be re-added.
            session.add(JobEvent(job_id=self.job_id, kind=kind, step=step, message=message, payload=clean))

        self._transaction(body, what=f"{kind} event")

    def register_checkpoint(
        self, step: int, key: str, size_bytes: int, metrics: Mapping[str, Any], kept_steps: set[int]
    ) -> list[str]:
        """Upsert the checkpoint row of `step`; drop the rows of checkpoints pruned from disk.

        Returns the artifact keys of the dropped rows."""
        clean = jsonable(metrics)
        score = clean.get("eval_accuracy") if isinstance(clean, dict) else None

        def body(session: Session) -> list[str]:
            values = {
                "job_id": self.job_id,
                "step": step,
                "uri": key,
                "size_bytes": size_bytes,
                "metrics": clean,
                "eval_score": score if isinstance(score, float | int) else None,
                "created_at": utcnow(),
            }
            upsert(
                session,
                Checkpoint,
                values,
                ("job_id", "step"),
                ("uri", "size_bytes", "metrics", "eval_score", "created_at"),
            )
            pruned = session.execute(
                delete(Checkpoint)
                .where(Checkpoint.job_id == self.job_id, Checkpoint.step.not_in(kept_steps | {step}))
                .returning(Checkpoint.uri)
                .execution_options(synchronize_session=False)
            )
            dropped = list(pruned.scalars())
            record_checkpoint_event(session, self.job_id, step)
            return dropped

        return self._transaction(body, what=f"checkpoint of step {step}")

    def forget_checkpoint(self, step: int) -> str | None:
        """Delete the row of a checkpoint the trainer pruned from disk; returns its artifact key."""

        def body(session: Session) -> str | None:
            removed = session.execute(
                delete(Checkpoint)
                .where(Checkpoint.job_id == self.job_id, Checkpoint.step == step)
                .returning(Checkpoint.uri)
                .execution_options(synchronize_session=False)
            )
            return removed.scalar_one_or_none()

        return self._transaction(body, what=f"pruning the checkpoint of step {step}")

    def prepare_resume(self, step: int) -> int:
        """Forget metrics a crashed attempt wrote after its last checkpoint: those steps are re-run.

        Returns how many metric rows were discarded."""

        def body(session: Session) -> int:
            dropped = cast(
                "CursorResult[Any]",
                session.execute(
                    delete(JobMetric)
                    .where(JobMetric.job_id == self.job_id, JobMetric.step > step)
                    .execution_options(synchronize_session=False)
                ),
            ).rowcount
            # Those steps are re-run and bill again: the crashed attempt's usage of them is not counted.
            session.execute(
                delete(JobUsage)
                .where(JobUsage.job_id == self.job_id, JobUsage.step > step)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(JobAttempt)
                .where(JobAttempt.job_id == self.job_id, JobAttempt.attempt == self.attempt)
                .values(resumed_from_step=step)
            )
            return int(dropped)

        return self._transaction(body, what="resume bookkeeping", extra={"current_step": step})

    def read_status(self) -> JobStatusView | None:
        def operation() -> JobStatusView | None:
            with self.sessions() as session:
                row = session.execute(
                    select(Job.status, Job.attempts, Job.cancel_requested).where(Job.id == self.job_id)
                ).one_or_none()
            return None if row is None else JobStatusView(row.status, row.attempts, row.cancel_requested)

        return retry_db(operation, what="status poll", window=self.retry_window)

    def read_job(self) -> Job:
        def operation() -> Job:
            with self.sessions() as session:
                return session.get_one(Job, self.job_id)

        return retry_db(operation, what="job read", window=self.retry_window)

    # ------------------------------------------------------------------ outcome
    def finish(
        self,
        status: JobStatus,
        *,
        message: str,
        step: int,
        summary: Mapping[str, Any] | None = None,
        error: str | None = None,
        event_payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Terminal state, final event and the attempt's outcome, in one transaction."""
        now = utcnow()
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": now,
            "error": error,
            "current_step": step,
        }
        if summary is not None:
            values["summary"] = jsonable(summary)

        def body(session: Session) -> None:
            session.add(
                JobEvent(
                    job_id=self.job_id,
                    kind=status.value,
                    step=step,
                    message=message,
                    payload=jsonable(event_payload or {}),
                )
            )
            session.execute(
                update(JobAttempt)
                .where(JobAttempt.job_id == self.job_id, JobAttempt.attempt == self.attempt)
                .values(outcome=status.value, error=error, ended_at=now)
            )
            record_job_status_event(session, self.job_id)

        self._transaction(body, what=f"{status.value} outcome", extra=values)

    def pause(self, *, step: int, message: str, event_payload: Mapping[str, Any] | None = None) -> bool:
        """pausing -> paused: the attempt ends (outcome `paused`) and no worker holds the job any more.

        Returns False, changing nothing, when the job is no longer pausing (cancelled meanwhile: the
        caller finishes it as such). Raises LeaseLost when the job belongs to another attempt."""
        now = utcnow()

        def operation() -> bool:
            with self.sessions.begin() as session:
                paused = session.execute(
                    update(Job)
                    .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.status == JobStatus.pausing.value)
                    .values(status=JobStatus.paused.value, current_step=step, worker_id=None, heartbeat_at=None)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(paused) != 1:
                    self._renew(session, {})  # still ours (cancelled meanwhile), or LeaseLost
                    return False
                session.execute(
                    update(JobAttempt)
                    .where(JobAttempt.job_id == self.job_id, JobAttempt.attempt == self.attempt)
                    .values(outcome=JobStatus.paused.value, ended_at=now)
                )
                mark_paused(session, self.job_id, step=step, message=message, payload=jsonable(event_payload or {}))
                return True

        return retry_db(operation, what="paused outcome", window=self.retry_window)
