"""A tenant's effective limits: the operator's overrides (tenant_quotas) over the REMIX_DEFAULT_* settings,
and the admission checks of a job submission (queued jobs, training budgets) as quota-exceeded problems.

Where each limit is enforced:
    requests_per_second    every authenticated request (service/rate_limit.py, from service/api/deps.py)
    max_queued_jobs        at submission, under a lock on the tenant row (429 + Retry-After)
    max_generated_tokens   at submission, against the tenant's recorded usage (403)
    max_device_seconds     at submission, against the tenant's recorded usage (403)
    max_running_jobs       when a worker claims a job (service/lifecycle/attempt.py): the job stays queued
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import ProblemError
from service.models import Job, JobStatus, Tenant, TenantQuota
from service.repositories import usage as usage_repo
from service.settings import Settings

QUOTA_FIELDS = (
    "max_running_jobs",
    "max_queued_jobs",
    "requests_per_second",
    "max_generated_tokens",
    "max_device_seconds",
)
# A full queue drains as jobs start; a spent budget does not come back by waiting.
QUEUE_FULL_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Limits:
    """One tenant's limits in force; None is unlimited."""

    max_running_jobs: int | None
    max_queued_jobs: int | None
    requests_per_second: float | None
    max_generated_tokens: int | None
    max_device_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def defaults(settings: Settings) -> Limits:
    return Limits(**{name: getattr(settings, f"default_{name}") for name in QUOTA_FIELDS})


def overrides_of(row: TenantQuota | None) -> dict[str, Any]:
    """The operator's overrides as {field: value or None (the default applies)}."""
    return {name: None if row is None else getattr(row, name) for name in QUOTA_FIELDS}


def effective(settings: Settings, row: TenantQuota | None) -> Limits:
    base = defaults(settings).as_dict()
    chosen = {name: value for name, value in overrides_of(row).items() if value is not None}
    return Limits(**(base | chosen))


def get_overrides(session: Session, tenant_id: uuid.UUID) -> TenantQuota | None:
    return session.get(TenantQuota, tenant_id)


def limits_of(session: Session, settings: Settings, tenant_id: uuid.UUID) -> Limits:
    return effective(settings, get_overrides(session, tenant_id))


def set_overrides(session: Session, tenant_id: uuid.UUID, values: dict[str, Any]) -> TenantQuota:
    """Replace the tenant's overrides by `values` (absent or None: the default applies); commits."""
    row = session.get(TenantQuota, tenant_id, with_for_update=True)
    if row is None:
        row = TenantQuota(tenant_id=tenant_id)
        session.add(row)
    for name in QUOTA_FIELDS:
        setattr(row, name, values.get(name))
    row.updated_at = func.now()
    session.commit()
    session.refresh(row)
    return row


def count_jobs(session: Session, tenant_id: uuid.UUID, statuses: tuple[str, ...]) -> int:
    query = select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(statuses))
    return int(session.scalar(query) or 0)


def quota_exceeded(
    status: int, quota: str, limit: float, usage: float | None, detail: str, **headers: str
) -> ProblemError:
    """A quota-exceeded problem naming the quota, its limit and (where it is counted) the usage."""
    extensions: dict[str, Any] = {"quota": quota, "limit": limit}
    if usage is not None:
        extensions["usage"] = usage
    return ProblemError(
        status, detail, title="Quota exceeded", slug="quota-exceeded", headers=dict(headers), **extensions
    )


def check_submission(session: Session, settings: Settings, tenant_id: uuid.UUID) -> None:
    """Refuse a new job the tenant's limits do not allow. Locks the tenant row until the caller's next
    commit, so that concurrent submissions of one tenant are counted one after the other."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    limits = limits_of(session, settings, tenant_id)
    if limits.max_queued_jobs is not None:
        queued = count_jobs(session, tenant_id, (JobStatus.queued.value,))
        if queued >= limits.max_queued_jobs:
            raise quota_exceeded(
                429,
                "max_queued_jobs",
                limits.max_queued_jobs,
                queued,
                f"max_queued_jobs: {queued} jobs queued, the limit is {limits.max_queued_jobs}; "
                "submit again once some have started",
                **{"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)},
            )
    if limits.max_generated_tokens is None and limits.max_device_seconds is None:
        return
    used = usage_repo.tenant_totals(session, tenant_id)
    budgets = (("max_generated_tokens", used.generated_tokens), ("max_device_seconds", used.device_seconds))
    for quota, spent in budgets:
        limit = getattr(limits, quota)
        if limit is not None and spent >= limit:
            raise quota_exceeded(
                403, quota, limit, spent, f"{quota}: the training budget of {limit} is used up ({spent} used)"
            )
