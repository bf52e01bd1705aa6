"""/v1/tenants (admin keys only): create and list tenants, create and list a tenant's API keys."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from service.account_schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    ApiKeysList,
    TenantCreate,
    TenantPublic,
    TenantsList,
)
from service.api.deps import AdminCaller, SessionDep
from service.errors import ConflictError, NotFoundError
from service.models import Tenant
from service.repositories import tenants as tenants_repo

router = APIRouter(prefix="/v1/tenants", tags=["tenants and keys"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: PROBLEM | {"description": "Not an admin key"}}


def _tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = tenants_repo.get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFoundError("tenant", tenant_id)
    return tenant


@router.post("", status_code=201, responses=ADMIN_ONLY | {409: PROBLEM | {"description": "Name taken"}})
def create_tenant(body: TenantCreate, response: Response, session: SessionDep, _admin: AdminCaller) -> TenantPublic:
    """Create a tenant (no keys yet: add them with POST /v1/tenants/{tenant_id}/keys)."""
    tenant = tenants_repo.create_tenant(session, body.name)
    if tenant is None:
        raise ConflictError(f"a tenant named {body.name!r} already exists", slug="tenant-exists")
    response.headers["Location"] = f"/v1/tenants/{tenant.id}"
    return TenantPublic.model_validate(tenant)


@router.get("", responses=ADMIN_ONLY)
def list_tenants(
    session: SessionDep,
    _admin: AdminCaller,
    name: Annotated[str | None, Query(max_length=200, description="Only the tenant with this name.")] = None,
) -> TenantsList:
    """Every tenant, oldest first."""
    return TenantsList(data=[TenantPublic.model_validate(t) for t in tenants_repo.list_tenants(session, name=name)])


@router.get("/{tenant_id}", responses=ADMIN_ONLY | {404: PROBLEM})
def get_tenant(tenant_id: uuid.UUID, session: SessionDep, _admin: AdminCaller) -> TenantPublic:
    """One tenant."""
    return TenantPublic.model_validate(_tenant(session, tenant_id))


@router.post("/{tenant_id}/keys", status_code=201, responses=ADMIN_ONLY | {404: PROBLEM})
def create_tenant_key(
    tenant_id: uuid.UUID, body: ApiKeyCreate, response: Response, session: SessionDep, _admin: AdminCaller
) -> ApiKeyCreated:
    """Create an API key for the tenant; the response is the only time its secret (`key`) is shown."""
    tenant = _tenant(session, tenant_id)
    row, clear = tenants_repo.create_api_key(session, tenant, name=body.name, is_admin=body.admin)
    response.headers["Location"] = f"/v1/keys/{row.id}"
    return ApiKeyCreated.model_validate({**ApiKeyPublic.model_validate(row).model_dump(), "key": clear})


@router.get("/{tenant_id}/keys", responses=ADMIN_ONLY | {404: PROBLEM})
def list_tenant_keys(tenant_id: uuid.UUID, session: SessionDep, _admin: AdminCaller) -> ApiKeysList:
    """The tenant's keys, revoked ones included, newest first (prefixes only, never secrets)."""
    tenant = _tenant(session, tenant_id)
    return ApiKeysList(data=[ApiKeyPublic.model_validate(k) for k in tenants_repo.list_keys(session, tenant.id)])
