"""A tenant's limit on jobs running at once, enforced when a worker claims a queued job."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.lifecycle.plumbing import ACTIVE_STATUSES
from service.models import Job, JobStatus, Tenant, TenantQuota


class RunningLimitReached(RuntimeError):
    """The job's tenant already runs as many jobs as its max_running_jobs allows: the job stays queued."""

    def __init__(self, job_id: uuid.UUID, limit: int, running: int) -> None:
        super().__init__(f"job {job_id} stays queued: its tenant runs {running} jobs, max_running_jobs is {limit}")
        self.limit = limit
        self.running = running


def enforce_running_limit(session: Session, job_id: uuid.UUID, default_limit: int | None) -> None:
    """Raise RunningLimitReached if claiming this queued job would exceed its tenant's running limit.

    The tenant row is locked first, so two workers claiming jobs of one tenant count one after the other."""
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id, Job.status == JobStatus.queued.value))
    if tenant_id is None:
        return  # not queued: the claim's own condition leaves it alone
    override = session.scalar(select(TenantQuota.max_running_jobs).where(TenantQuota.tenant_id == tenant_id))
    limit = override if override is not None else default_limit
    if limit is None:
        return
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    running = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
    )
    if int(running or 0) >= limit:
        raise RunningLimitReached(job_id, limit, int(running or 0))
