"""FastAPI dependencies shared by every route: settings, DB session, artifact store, caller (and admin caller).

The caller dependency also applies the tenant's request rate limit (service/rate_limit.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore, get_artifact_store
from service.auth_cache import key_cache
from service.db import get_session
from service.errors import ProblemError, UnauthorizedError
from service.quotas import quota_exceeded
from service.rate_limit import get_rate_limiter
from service.repositories.tenants import find_active_key_and_rate
from service.security import hash_api_key
from service.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (create_app). Read from the app rather than overriding
    `get_settings`: FastAPI re-inspects an overridden dependency's signature on every request."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer rmx_...`")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: every query is filtered by `tenant_id`."""

    tenant_id: uuid.UUID
    api_key_id: uuid.UUID
    is_admin: bool


async def get_current_tenant(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the Bearer API key (401 problem if missing, unknown or revoked), then take one request
    from the tenant's rate limit (429 problem with Retry-After when it is spent).

    The lookup goes through the per-process key cache (service/auth_cache.py). On a miss it runs in the
    request's own session and nothing commits: the route reuses that connection, and InflightLimit keeps
    the requests holding one below the pool's size. A coroutine: a cached key costs no worker thread."""
    if credentials is None:
        raise UnauthorizedError("Missing API key: send 'Authorization: Bearer <key>'", invalid_token=False)
    key_hash = hash_api_key(credentials.credentials)
    cached = key_cache.get(key_hash)
    if cached is not None:
        principal, rate_override = cached.principal, cached.requests_per_second
    else:
        found = await run_in_threadpool(find_active_key_and_rate, session, credentials.credentials)
        if found is None:
            raise UnauthorizedError("Invalid or revoked API key", invalid_token=True)
        key, rate_override = found
        principal = Principal(tenant_id=key.tenant_id, api_key_id=key.id, is_admin=key.is_admin)
        key_cache.put(key_hash, principal, key.id, rate_override, settings.auth_cache_seconds)
    assert isinstance(principal, Principal)
    rate = rate_override if rate_override is not None else settings.default_requests_per_second
    if rate is not None:
        limiter = get_rate_limiter(settings.rate_limit_redis_url)
        decision = await run_in_threadpool(limiter.take, principal.tenant_id, rate, settings.rate_limit_burst_seconds)
        if not decision.allowed:
            raise quota_exceeded(
                429,
                "requests_per_second",
                rate,
                None,
                f"requests_per_second: this tenant may make {rate:g} requests per second; "
                f"retry in {decision.retry_after_seconds} s",
                **{"Retry-After": str(decision.retry_after_seconds)},
            )
    return principal


async def require_admin(caller: Annotated[Principal, Depends(get_current_tenant)]) -> Principal:
    """The caller if its key is an admin key; 403 problem otherwise."""
    if not caller.is_admin:
        raise ProblemError(403, "This route needs an admin API key", title="Forbidden", slug="admin-required")
    return caller


def get_store(settings: SettingsDep) -> ArtifactStore:
    return get_artifact_store(settings)


CurrentTenant = Annotated[Principal, Depends(get_current_tenant)]
AdminCaller = Annotated[Principal, Depends(require_admin)]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_store)]
