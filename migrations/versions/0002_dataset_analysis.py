"""Datasets: what the upload found (layout, fields used, a prompt rendered with a model's template).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable: datasets uploaded before this revision have no analysis and read as "prompt-answer".
    op.add_column("datasets", sa.Column("analysis", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("datasets", "analysis")
