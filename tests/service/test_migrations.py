"""The Alembic history builds exactly the ORM schema, and downgrades to an empty database; the pause
revision widens the jobs' status CHECK and narrows it back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_testing import create_database, drop_database
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from service.db import create_db_engine
from service.migrate import downgrade, upgrade
from service.models import Base


def _differences(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/remix.db"
        return
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    upgrade(empty_database)
    assert _differences(empty_database) == []
    model_tables = set(Base.metadata.tables)
    assert model_tables <= _tables(empty_database)

    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}

    upgrade(empty_database)
    assert _differences(empty_database) == []


def _insert_job_with_status(url: str, status: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tenant = uuid.uuid4()
            conn.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:id, :name, CURRENT_TIMESTAMP)"),
                {"id": tenant.hex if url.startswith("sqlite") else str(tenant), "name": f"t-{tenant.hex[:8]}"},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, name, status, base_model, config, total_steps, current_step,"
                    " attempts, cancel_requested, checkpoint_on_cancel, summary, created_at, metadata)"
                    " VALUES (:id, :tenant, 'j', :status, 'm', '{}', 1, 0, 0, false, false, '{}',"
                    " CURRENT_TIMESTAMP, '{}')"
                ),
                {
                    "id": uuid.uuid4().hex if url.startswith("sqlite") else str(uuid.uuid4()),
                    "tenant": tenant.hex if url.startswith("sqlite") else str(tenant),
                    "status": status,
                },
            )
    finally:
        engine.dispose()


def test_the_pause_revision_admits_the_pause_statuses_and_its_downgrade_does_not(empty_database: str) -> None:
    upgrade(empty_database)
    for status in ("pausing", "paused"):
        _insert_job_with_status(empty_database, status)
    with pytest.raises(IntegrityError):
        _insert_job_with_status(empty_database, "sleeping")

    downgrade(empty_database, "0003")  # the paused job is queued again, the pausing one running
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            statuses = sorted(conn.execute(text("SELECT status FROM jobs")).scalars())
    finally:
        engine.dispose()
    assert statuses == ["queued", "running"]
    with pytest.raises(IntegrityError):
        _insert_job_with_status(empty_database, "paused")
