"""Quotas: the operator sets a tenant's limits (PUT/GET /v1/tenants/{tenant_id}/quotas, admin keys) and a
tenant reads its own (GET /v1/quotas): the limits in force, the overrides, usage and job counts."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import quotas
from service.account_schemas import QuotaValues, TenantQuotas, UsageTotals
from service.api.deps import AdminCaller, CurrentTenant, SessionDep, SettingsDep
from service.auth_cache import key_cache
from service.errors import NotFoundError
from service.models import JobStatus
from service.repositories import tenants as tenants_repo
from service.repositories import usage as usage_repo
from service.settings import Settings

router = APIRouter(tags=["quotas and usage"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: PROBLEM | {"description": "Not an admin key"}}


def _report(session: Session, settings: Settings, tenant_id: uuid.UUID) -> TenantQuotas:
    row = quotas.get_overrides(session, tenant_id)
    running = quotas.count_jobs(session, tenant_id, (JobStatus.running.value, JobStatus.cancelling.value))
    return TenantQuotas(
        tenant_id=tenant_id,
        limits=QuotaValues(**quotas.effective(settings, row).as_dict()),
        overrides=QuotaValues(**quotas.overrides_of(row)),
        usage=UsageTotals.model_validate(usage_repo.tenant_totals(session, tenant_id)),
        running_jobs=running,
        queued_jobs=quotas.count_jobs(session, tenant_id, (JobStatus.queued.value,)),
    )


def _existing_tenant(session: Session, tenant_id: uuid.UUID) -> uuid.UUID:
    if tenants_repo.get_tenant(session, tenant_id) is None:
        raise NotFoundError("tenant", tenant_id)
    return tenant_id


@router.get("/v1/quotas")
def get_own_quotas(session: SessionDep, settings: SettingsDep, caller: CurrentTenant) -> TenantQuotas:
    """Your tenant's limits in force, the operator's overrides, your usage so far and your job counts."""
    return _report(session, settings, caller.tenant_id)


@router.get("/v1/tenants/{tenant_id}/quotas", responses=ADMIN_ONLY | {404: PROBLEM})
def get_tenant_quotas(
    tenant_id: uuid.UUID, session: SessionDep, settings: SettingsDep, _admin: AdminCaller
) -> TenantQuotas:
    """A tenant's limits in force, its overrides, usage and job counts."""
    return _report(session, settings, _existing_tenant(session, tenant_id))


@router.put("/v1/tenants/{tenant_id}/quotas", responses=ADMIN_ONLY | {404: PROBLEM, 422: PROBLEM})
def set_tenant_quotas(
    tenant_id: uuid.UUID, body: QuotaValues, session: SessionDep, settings: SettingsDep, _admin: AdminCaller
) -> TenantQuotas:
    """Replace a tenant's overrides: each field a limit, or null/absent for the REMIX_DEFAULT_* setting.
    Running-jobs and submission limits apply from the next claim or submission; a new request rate
    within REMIX_AUTH_CACHE_SECONDS on every API process."""
    quotas.set_overrides(session, _existing_tenant(session, tenant_id), body.model_dump())
    key_cache.forget_tenant_limits()
    return _report(session, settings, tenant_id)
