"""Usage: what a tenant's training consumed over a time window (GET /v1/usage) and what one job
consumed (GET /v1/jobs/{job_id}/usage), from the per-step usage the workers record."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.account_schemas import JobUsage, UsageReport, UsageTotals
from service.api.deps import CurrentTenant, SessionDep
from service.errors import FieldValidationError, NotFoundError
from service.repositories import jobs as jobs_repo
from service.repositories import usage as usage_repo
from service.schemas import UtcDatetime

router = APIRouter(tags=["quotas and usage"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.get("/v1/usage", responses={422: PROBLEM})
def get_usage(
    session: SessionDep,
    caller: CurrentTenant,
    start: Annotated[
        UtcDatetime | None, Query(alias="from", description="ISO 8601 timestamp; steps recorded at or after it.")
    ] = None,
    end: Annotated[
        UtcDatetime | None, Query(alias="to", description="ISO 8601 timestamp; steps recorded before it.")
    ] = None,
) -> UsageReport:
    """Your tenant's usage recorded in [from, to): totals and one entry per job with usage in the window."""
    if start is not None and end is not None and start >= end:
        raise FieldValidationError([{"field": "to", "message": "must be later than from"}])
    totals = usage_repo.tenant_totals(session, caller.tenant_id, start=start, end=end)
    jobs = usage_repo.per_job(session, caller.tenant_id, start=start, end=end)
    return UsageReport(
        **{"from": start},
        to=end,
        totals=UsageTotals.model_validate(totals),
        jobs=[JobUsage(job_id=job_id, **UsageTotals.model_validate(used).model_dump()) for job_id, used in jobs],
    )


@router.get("/v1/jobs/{job_id}/usage", responses={404: PROBLEM})
def get_job_usage(job_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> JobUsage:
    """What one of your jobs consumed so far (a step re-run after a resume counts once)."""
    if jobs_repo.get_job(session, caller.tenant_id, job_id) is None:
        raise NotFoundError("job", job_id)
    used = usage_repo.job_totals(session, job_id)
    return JobUsage(job_id=job_id, **UsageTotals.model_validate(used).model_dump())
