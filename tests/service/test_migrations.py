"""The Alembic history builds exactly the ORM schema, and downgrades to an empty database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_testing import create_database, drop_database
from sqlalchemy import create_engine, inspect

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
