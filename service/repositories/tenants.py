"""Tenants and their API keys: creation, listing, rotation and revocation (every write commits).

Authentication reads the key table through a short-lived per-process cache (service/auth_cache.py):
a revoked key is refused at most REMIX_AUTH_CACHE_SECONDS after the revocation commits, and at once by
the process that revoked it (`revoke`, `rotate` and `revoke_key` drop its cache entries); an event
stream already open checks its key on every poll (`is_key_active`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth_cache import key_cache
from service.models import ApiKey, Tenant, TenantQuota
from service.security import generate_api_key, hash_api_key, key_matches, looks_like_api_key, public_prefix


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if missing (commits)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError:  # created concurrently by another process
        session.rollback()
        return session.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


def create_tenant(session: Session, name: str) -> Tenant | None:
    """A new tenant called `name` (commits), or None if that name is taken."""
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError:  # the unique name, also when another request created it concurrently
        session.rollback()
        return None
    return tenant


def list_tenants(session: Session, *, name: str | None = None) -> list[Tenant]:
    """Every tenant (or the one called `name`), oldest first."""
    query = select(Tenant)
    if name is not None:
        query = query.where(Tenant.name == name)
    return list(session.scalars(query.order_by(Tenant.created_at, Tenant.id)))


def get_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant | None:
    return session.get(Tenant, tenant_id)


def create_api_key(session: Session, tenant: Tenant, *, name: str = "", is_admin: bool = False) -> tuple[ApiKey, str]:
    """Store a new key for `tenant` (commits); returns the row and the clear key, shown once."""
    clear = generate_api_key()
    row = ApiKey(
        tenant_id=tenant.id,
        name=name,
        prefix=public_prefix(clear),
        key_hash=hash_api_key(clear),
        is_admin=is_admin,
    )
    session.add(row)
    session.commit()
    return row, clear


def find_active_key(session: Session, clear: str) -> ApiKey | None:
    """The unrevoked key matching `clear`, or None."""
    if not looks_like_api_key(clear):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(clear)))
    if row is None or row.revoked_at is not None or not key_matches(clear, row.key_hash):
        return None
    return row


def find_active_key_and_rate(session: Session, clear: str) -> tuple[ApiKey, float | None] | None:
    """The unrevoked key matching `clear` and its tenant's requests_per_second override, in one query."""
    if not looks_like_api_key(clear):
        return None
    query = (
        select(ApiKey, TenantQuota.requests_per_second)
        .outerjoin(TenantQuota, TenantQuota.tenant_id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(clear))
    )
    found = session.execute(query).first()
    if found is None:
        return None
    row, rate = found
    if row.revoked_at is not None or not key_matches(clear, row.key_hash):
        return None
    return row, rate


def is_key_active(session: Session, key_id: uuid.UUID) -> bool:
    """Whether the key exists and is not revoked."""
    revoked_at = session.execute(select(ApiKey.revoked_at).where(ApiKey.id == key_id)).first()
    return revoked_at is not None and revoked_at[0] is None


def revoke_key(session: Session, prefix: str) -> int:
    """Revoke every active key with this public prefix (commits); returns how many."""
    rows = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = datetime.now(UTC)
    session.commit()
    for row in rows:
        key_cache.forget_key(row.id)
    return len(rows)


def list_keys(session: Session, tenant_id: uuid.UUID) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, newest first."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())))


def get_key(
    session: Session, key_id: uuid.UUID, *, tenant_id: uuid.UUID | None, for_update: bool = False
) -> ApiKey | None:
    """The key with this id if it belongs to `tenant_id` (any tenant's with None), else None: another
    tenant's key is indistinguishable from a missing one. `for_update` locks the row until commit."""
    query = select(ApiKey).where(ApiKey.id == key_id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def revoke(session: Session, key: ApiKey) -> ApiKey:
    """Revoke `key` now (commits); revoking a revoked key keeps its first revocation time."""
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    session.commit()
    key_cache.forget_key(key.id)
    return key


def rotate(session: Session, key: ApiKey) -> tuple[ApiKey, str]:
    """Replace an active `key` (read with `for_update`) by a new one with the same tenant, name and
    rights, and revoke it, in one transaction (commits); returns the new row and its clear secret."""
    assert key.revoked_at is None, "rotate an active key"
    clear = generate_api_key()
    replacement = ApiKey(
        tenant_id=key.tenant_id,
        name=key.name,
        prefix=public_prefix(clear),
        key_hash=hash_api_key(clear),
        is_admin=key.is_admin,
    )
    key.revoked_at = datetime.now(UTC)
    session.add(replacement)
    session.commit()
    key_cache.forget_key(key.id)
    return replacement, clear
