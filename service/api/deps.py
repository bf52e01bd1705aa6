"""FastAPI dependencies shared by every route: settings, DB session, artifact store, caller (and admin caller)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore, get_artifact_store
from service.db import get_session
from service.errors import ProblemError, UnauthorizedError
from service.repositories.tenants import find_active_key
from service.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer rmx_...`")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: every query is filtered by `tenant_id`."""

    tenant_id: uuid.UUID
    api_key_id: uuid.UUID
    is_admin: bool


def get_current_tenant(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """Authenticate the Bearer API key; 401 problem if missing, unknown or revoked."""
    if credentials is None:
        raise UnauthorizedError("Missing API key: send 'Authorization: Bearer <key>'", invalid_token=False)
    key = find_active_key(session, credentials.credentials)
    principal = None if key is None else Principal(tenant_id=key.tenant_id, api_key_id=key.id, is_admin=key.is_admin)
    # End the read-only transaction now: the connection goes back to the pool while this request
    # waits for a worker thread to run its route. Holding it across that wait deadlocks the API once
    # more requests are in flight than the pool has connections (every thread then waits for a
    # connection held by a request that waits for a thread).
    session.commit()
    if principal is None:
        raise UnauthorizedError("Invalid or revoked API key", invalid_token=True)
    return principal


def require_admin(caller: Annotated[Principal, Depends(get_current_tenant)]) -> Principal:
    """The caller if its key is an admin key; 403 problem otherwise."""
    if not caller.is_admin:
        raise ProblemError(403, "This route needs an admin API key", title="Forbidden", slug="admin-required")
    return caller


def get_store(settings: SettingsDep) -> ArtifactStore:
    return get_artifact_store(settings)


CurrentTenant = Annotated[Principal, Depends(get_current_tenant)]
AdminCaller = Annotated[Principal, Depends(require_admin)]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_store)]
