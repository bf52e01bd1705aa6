"""Submitting a job: resolve datasets, validate the config, insert idempotently, dispatch
(the insert and the dispatch are service/lifecycle transitions; this module maps their failures to problems).

The tenant's queued-jobs limit and training budgets are checked first (service/quotas.py), under a lock
on the tenant row that the insert's commit releases. The row is committed before the task is sent,
so a worker never receives an id it cannot read. If the broker is down the job stays queued without
a task id and the client gets a 503; repeating the request with the same Idempotency-Key dispatches that same job.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service import lifecycle
from service.errors import FieldValidationError, ProblemError
from service.job_config import CheckpointSource, JobLookup, build_train_config, request_hash
from service.models import Dataset, Job, JobStatus
from service.queue import enqueue_train_job
from service.quotas import check_submission
from service.repositories import datasets as datasets_repo
from service.repositories import job_outputs as outputs_repo
from service.repositories import jobs as jobs_repo
from service.schemas import JobCreate
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitter:
    tenant_id: uuid.UUID
    is_admin: bool


def _dataset(session: Session, submitter: Submitter, dataset_id: uuid.UUID | None, field: str) -> Dataset | None:
    if dataset_id is None:
        return None
    dataset = datasets_repo.get_dataset(session, submitter.tenant_id, dataset_id)
    if dataset is None:
        raise FieldValidationError([{"field": field, "message": f"dataset {dataset_id} not found"}])
    return dataset


def _tenant_jobs(session: Session, submitter: Submitter) -> JobLookup:
    """The submitting tenant's jobs and their checkpoints, for `model.name_or_path: job:<id>[@<step>]`."""

    def lookup(job_id: str) -> CheckpointSource | None:
        job = jobs_repo.get_job(session, submitter.tenant_id, uuid.UUID(job_id))  # None for other tenants
        if job is None:
            return None
        steps = tuple(checkpoint.step for checkpoint in outputs_repo.list_checkpoints(session, job.id))
        model = job.config.get("model") if isinstance(job.config, dict) else None
        return CheckpointSource(steps, model if isinstance(model, dict) else {})

    return lookup


def dispatch_queued_job(
    session: Session, settings: Settings, job: Job, *, retry: str = "retry with the same Idempotency-Key"
) -> None:
    """Send the task of a queued job unless a concurrent request already did (job creation, and the
    resume of a paused job); a broker failure is a 503 problem telling the caller how to `retry`."""
    try:
        lifecycle.dispatch_job(session, job, lambda task_id: enqueue_train_job(settings, job.id, task_id=task_id))
    except lifecycle.DispatchFailed as failed:
        exc = failed.__cause__ or failed
        log.warning("could not dispatch job %s: %s", job.id, exc)
        raise ProblemError(
            503,
            f"job {job.id} was stored but could not be dispatched; {retry}",
            title="Service Unavailable",
            slug="queue-unavailable",
            headers={"Retry-After": "5"},
            job_id=str(job.id),
        ) from exc


def submit_job(
    session: Session, settings: Settings, submitter: Submitter, body: JobCreate, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Create (or replay) the job and make sure it was dispatched; returns (job, replayed)."""
    train = _dataset(session, submitter, body.dataset_id, "dataset_id")
    evaluation = _dataset(session, submitter, body.eval_dataset_id, "eval_dataset_id")
    config = build_train_config(
        body,
        train=train,
        evaluation=evaluation,
        is_admin=submitter.is_admin,
        gpu_memory_gib=settings.gpu_memory_gib,
        max_tokens_per_step=settings.max_tokens_per_step,
        judge_configured=settings.judge_configured,
        model_dirs=settings.model_dir_list,
        jobs=_tenant_jobs(session, submitter),
        tracking_allow_local=settings.tracking_allow_local,
    )
    draft = lifecycle.NewJob(
        tenant_id=submitter.tenant_id,
        name=body.name,
        base_model=config.model.name_or_path,
        dataset_id=train.id if train else None,
        config=config.model_dump(mode="json"),
        total_steps=config.total_steps,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body),
        metadata=body.metadata,
    )
    # A replay of an accepted request returns its job whatever the quotas say now.
    if (
        idempotency_key is None
        or jobs_repo.find_by_idempotency_key(session, submitter.tenant_id, idempotency_key) is None
    ):
        check_submission(session, settings, submitter.tenant_id)
    try:
        job, created = lifecycle.create_job(session, draft)
    except lifecycle.IdempotencyKeyReused as exc:
        raise ProblemError(
            422,
            "Idempotency-Key was already used with a different request body",
            title="Idempotency key reused",
            slug="idempotency-key-reused",
            job_id=str(exc.job.id),
        ) from exc
    if job.celery_task_id is None and job.status == JobStatus.queued.value:
        dispatch_queued_job(session, settings, job)
    return job, not created
