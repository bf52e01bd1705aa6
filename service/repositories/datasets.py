"""Uploaded datasets, always scoped to one tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Dataset
from service.pagination import older_than


def create_dataset(session: Session, *, dataset_id: uuid.UUID, tenant_id: uuid.UUID, **fields: Any) -> Dataset:
    """Insert a dataset row (commits)."""
    row = Dataset(id=dataset_id, tenant_id=tenant_id, **fields)
    session.add(row)
    session.commit()
    return row


def get_dataset(session: Session, tenant_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset | None:
    """The tenant's dataset, or None (another tenant's dataset is indistinguishable from a missing one)."""
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))


def list_datasets(
    session: Session, tenant_id: uuid.UUID, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> tuple[list[Dataset], bool]:
    """Newest first; returns (page, has_more)."""
    query = select(Dataset).where(Dataset.tenant_id == tenant_id)
    if after is not None:
        query = query.where(older_than(Dataset.created_at, Dataset.id, after))
    rows = list(session.scalars(query.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
