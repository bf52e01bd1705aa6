"""/v1/keys: the caller's own API keys: list, read, rotate and revoke.

A tenant's key reaches only its tenant's keys (another tenant's key is a 404, as if it did not
exist); an admin key reaches every key. Revocation is immediate: keys are looked up in the
database on every request, with no cache in between.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from service.account_schemas import ApiKeyCreated, ApiKeyPublic, ApiKeysList
from service.api.deps import CurrentTenant, Principal, SessionDep
from service.errors import ConflictError, NotFoundError
from service.models import ApiKey
from service.repositories import tenants as tenants_repo

router = APIRouter(prefix="/v1/keys", tags=["tenants and keys"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def visible_key(session: Session, caller: Principal, key_id: uuid.UUID, *, for_update: bool = False) -> ApiKey:
    """The key if the caller may manage it (its tenant's, or any with an admin key), else a 404 problem."""
    scope = None if caller.is_admin else caller.tenant_id
    key = tenants_repo.get_key(session, key_id, tenant_id=scope, for_update=for_update)
    if key is None:
        raise NotFoundError("API key", key_id)
    return key


@router.get("")
def list_keys(session: SessionDep, caller: CurrentTenant) -> ApiKeysList:
    """Your tenant's keys, revoked ones included, newest first (prefixes only, never secrets)."""
    return ApiKeysList(data=[ApiKeyPublic.model_validate(k) for k in tenants_repo.list_keys(session, caller.tenant_id)])


@router.get("/{key_id}", responses={404: PROBLEM})
def get_key(key_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> ApiKeyPublic:
    """One of your keys."""
    return ApiKeyPublic.model_validate(visible_key(session, caller, key_id))


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    responses={404: PROBLEM, 409: PROBLEM | {"description": "The key is already revoked"}},
)
def rotate_key(key_id: uuid.UUID, response: Response, session: SessionDep, caller: CurrentTenant) -> ApiKeyCreated:
    """Replace a key: a new key with the same name and rights (its secret shown once, in this response)
    and the old key revoked, in one transaction. Rotating the key that authenticates this request works
    too: the next request needs the new key."""
    key = visible_key(session, caller, key_id, for_update=True)
    if key.revoked_at is not None:
        raise ConflictError(f"API key {key_id} is revoked; only an active key can be rotated", slug="key-revoked")
    row, clear = tenants_repo.rotate(session, key)
    response.headers["Location"] = f"/v1/keys/{row.id}"
    return ApiKeyCreated.model_validate({**ApiKeyPublic.model_validate(row).model_dump(), "key": clear})


@router.delete("/{key_id}", status_code=204, responses={404: PROBLEM})
def revoke_key(key_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> Response:
    """Revoke a key: every request with it from now on gets 401. Revoking a revoked key is a no-op."""
    tenants_repo.revoke(session, visible_key(session, caller, key_id, for_update=True))
    return Response(status_code=204)
