"""/v1/jobs: submit, read, list (by status and metadata), update metadata, cancel, pause, resume, and
read a job's metrics and events.

The reads that clients poll (a job, the list, the metrics) are coroutines that make one trip to a worker
thread for the query and the response model (service.db.read_in_thread)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy.orm import Session

from service import lifecycle
from service.api.deps import CurrentTenant, Principal, SessionDep, SettingsDep
from service.db import read_in_thread
from service.errors import ConflictError, FieldValidationError, NotFoundError, ProblemError
from service.job_submission import Submitter, dispatch_queued_job, submit_job
from service.models import Job, JobStatus
from service.pagination import decode_cursor, encode_cursor
from service.repositories import job_outputs
from service.repositories import jobs as jobs_repo
from service.schemas import (
    METADATA_MAX_KEY_CHARS,
    METADATA_MAX_VALUE_CHARS,
    EventPublic,
    EventsPage,
    JobCreate,
    JobPublic,
    JobsPage,
    JobUpdate,
    MetricPoint,
    MetricsPage,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def owned_job(session: Session, caller: Principal, job_id: uuid.UUID) -> Job:
    """The caller's job or a 404 problem (other tenants' jobs do not exist for them)."""
    job = jobs_repo.get_job(session, caller.tenant_id, job_id)
    if job is None:
        raise NotFoundError("job", job_id)
    return job


@router.post(
    "",
    status_code=202,
    responses={
        409: PROBLEM | {"description": "Idempotency conflict"},
        422: PROBLEM | {"description": "Invalid request or reused Idempotency-Key"},
        503: PROBLEM | {"description": "Queue unavailable; retry with the same Idempotency-Key"},
    },
)
def create_job(
    *,
    body: JobCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    caller: CurrentTenant,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobPublic:
    """Submit a finetuning job; it is queued and dispatched to a worker (202 + Location)."""
    submitter = Submitter(tenant_id=caller.tenant_id, is_admin=caller.is_admin)
    job, replayed = submit_job(session, settings, submitter, body, idempotency_key)
    response.headers["Location"] = request.app.url_path_for("get_job", job_id=str(job.id))
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return JobPublic.model_validate(job)


METADATA_FILTER_PARAMETER = {
    "name": "metadata[key]",
    "in": "query",
    "required": False,
    "description": "Only jobs whose metadata has this value for `key`, e.g. `metadata[team]=search`; "
    "several filters must all match.",
    "schema": {"type": "string", "maxLength": METADATA_MAX_VALUE_CHARS},
}


def metadata_filters(request: Request) -> list[tuple[str, str]]:
    """The `metadata[key]=value` query parameters, checked against the metadata bounds (422 naming each)."""
    filters, errors = [], []
    for name, value in request.query_params.multi_items():
        if not (name.startswith("metadata[") and name.endswith("]")):
            continue
        key = name[len("metadata[") : -1]
        if not 1 <= len(key) <= METADATA_MAX_KEY_CHARS:
            errors.append({"field": name, "message": f"the key must have 1 to {METADATA_MAX_KEY_CHARS} characters"})
        elif len(value) > METADATA_MAX_VALUE_CHARS:
            errors.append({"field": name, "message": f"at most {METADATA_MAX_VALUE_CHARS} characters"})
        else:
            filters.append((key, value))
    if errors:
        raise FieldValidationError(errors)
    return filters


def jobs_page(
    session: Session,
    caller: Principal,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    metadata: list[tuple[str, str]],
) -> JobsPage:
    rows, has_more = jobs_repo.list_jobs(
        session, caller.tenant_id, status=status, limit=limit, after=after, metadata=metadata
    )
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if rows and has_more else None
    return JobsPage(data=[JobPublic.model_validate(r) for r in rows], has_more=has_more, next_cursor=next_cursor)


@router.get("", responses={400: PROBLEM, 422: PROBLEM}, openapi_extra={"parameters": [METADATA_FILTER_PARAMETER]})
async def list_jobs(
    *,
    request: Request,
    session: SessionDep,
    caller: CurrentTenant,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="Cursor from a previous page's next_cursor.")] = None,
) -> JobsPage:
    """List the caller's jobs, newest first, optionally filtered by status and by metadata."""
    cursor = decode_cursor(after) if after else None
    return await read_in_thread(
        session,
        jobs_page,
        caller,
        status=status.value if status else None,
        limit=limit,
        after=cursor,
        metadata=metadata_filters(request),
    )


def read_job(session: Session, caller: Principal, job_id: uuid.UUID) -> JobPublic:
    row = jobs_repo.get_job_row(session, caller.tenant_id, job_id)
    if row is None:
        raise NotFoundError("job", job_id)
    return JobPublic.model_validate(row)


@router.get("/{job_id}", responses={404: PROBLEM})
async def get_job(*, job_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> JobPublic:
    """Read one job (status, progress, summary)."""
    return await read_in_thread(session, read_job, caller, job_id)


@router.patch("/{job_id}", responses={404: PROBLEM, 422: PROBLEM})
def update_job(*, job_id: uuid.UUID, body: JobUpdate, session: SessionDep, caller: CurrentTenant) -> JobPublic:
    """Replace the job's metadata (in any status); the rest of a job is set at submission."""
    job = owned_job(session, caller, job_id)
    return JobPublic.model_validate(lifecycle.replace_job_metadata(session, job, body.metadata))


@router.post("/{job_id}/cancel", responses={202: {"description": "Cancellation requested"}, 404: PROBLEM, 409: PROBLEM})
def cancel_job(
    *,
    job_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    caller: CurrentTenant,
    checkpoint: Annotated[bool, Query(description="Save a checkpoint before stopping a running job.")] = False,
) -> JobPublic:
    """Cancel: a queued job is cancelled at once (200); a running one stops at the next step (202)."""
    job = owned_job(session, caller, job_id)
    outcome = lifecycle.request_cancel(session, job, checkpoint=checkpoint)
    if outcome is lifecycle.CancelOutcome.terminal:
        raise ConflictError(f"job {job.id} is already {job.status}", slug="job-terminal")
    response.status_code = 200 if outcome is lifecycle.CancelOutcome.cancelled else 202
    return JobPublic.model_validate(job)


@router.post(
    "/{job_id}/pause",
    responses={
        202: {"description": "Pause requested: the worker saves a checkpoint and stops"},
        404: PROBLEM,
        409: PROBLEM,
    },
)
def pause_job(*, job_id: uuid.UUID, response: Response, session: SessionDep, caller: CurrentTenant) -> JobPublic:
    """Pause: a queued job is paused at once (200); a running one becomes `pausing` (202), and its worker
    saves a checkpoint of the step reached and stops at the next step boundary, leaving it `paused`.
    Pausing a pausing or paused job changes nothing (200); a cancelling or finished job is a 409."""
    job = owned_job(session, caller, job_id)
    outcome = lifecycle.request_pause(session, job)
    if outcome is lifecycle.PauseOutcome.refused:
        raise ProblemError(
            409, f"job {job.id} is {job.status} and cannot be paused", slug="job-not-pausable", job_status=job.status
        )
    response.status_code = 202 if outcome is lifecycle.PauseOutcome.requested else 200
    return JobPublic.model_validate(job)


@router.post("/{job_id}/resume", responses={404: PROBLEM, 409: PROBLEM, 503: PROBLEM})
def resume_job(*, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, caller: CurrentTenant) -> JobPublic:
    """Resume a paused job: it is queued and dispatched, and continues from its newest checkpoint with
    the exact training state of the pause (200). A queued or running job is left as it is (200); a
    pausing job (not stopped yet), a cancelling or a finished one is a 409."""
    job = owned_job(session, caller, job_id)
    outcome = lifecycle.request_resume(session, job)
    if outcome is lifecycle.ResumeOutcome.refused:
        raise ProblemError(
            409,
            f"job {job.id} is {job.status}; only a paused job can be resumed",
            slug="job-not-paused",
            job_status=job.status,
        )
    if job.status == JobStatus.queued.value and job.celery_task_id is None:
        # Also retries the dispatch of an earlier resume whose message the broker refused (503).
        dispatch_queued_job(session, settings, job, retry="retry the resume")
    return JobPublic.model_validate(job)


def metrics_page(
    session: Session, caller: Principal, job_id: uuid.UUID, *, from_step: int | None, to_step: int | None, limit: int
) -> MetricsPage:
    page = job_outputs.list_metrics(
        session, caller.tenant_id, job_id, from_step=from_step, to_step=to_step, limit=limit
    )
    if page is None:
        raise NotFoundError("job", job_id)
    rows, has_more = page
    return MetricsPage(data=[MetricPoint.model_validate(r) for r in rows], has_more=has_more)


@router.get("/{job_id}/metrics", responses={404: PROBLEM})
async def get_metrics(
    *,
    job_id: uuid.UUID,
    session: SessionDep,
    caller: CurrentTenant,
    from_step: Annotated[int | None, Query(ge=0)] = None,
    to_step: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> MetricsPage:
    """Per-step metrics with from_step <= step <= to_step, ascending."""
    if from_step is not None and to_step is not None and from_step > to_step:
        raise FieldValidationError([{"field": "to_step", "message": "must be >= from_step"}])
    return await read_in_thread(
        session, metrics_page, caller, job_id, from_step=from_step, to_step=to_step, limit=limit
    )


@router.get("/{job_id}/events", responses={404: PROBLEM})
def get_events(
    *,
    job_id: uuid.UUID,
    session: SessionDep,
    caller: CurrentTenant,
    after: Annotated[int | None, Query(ge=0, description="Return events with id > after.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsPage:
    """Lifecycle events (queued, started, checkpoint, reincarnated, cancelled, ...), oldest first."""
    job = owned_job(session, caller, job_id)
    rows, has_more = job_outputs.list_events(session, job.id, after=after, limit=limit)
    return EventsPage(data=[EventPublic.model_validate(r) for r in rows], has_more=has_more)
