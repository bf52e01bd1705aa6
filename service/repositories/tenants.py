"""Tenants and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant
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


def revoke_key(session: Session, prefix: str) -> int:
    """Revoke every active key with this public prefix (commits); returns how many."""
    rows = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = datetime.now(UTC)
    session.commit()
    return len(rows)
