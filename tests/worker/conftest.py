"""Fixtures for worker tests: a fresh migrated Postgres database, a Redis broker, a job factory
and a factory of real Celery worker processes (helpers live in worker_testing.py).

The database is created once per test session (`alembic upgrade head`) and emptied before each
test; Redis db 13 is flushed before and after the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from worker_testing import REPO_ROOT, ManagedProcess, service_env, tiny_job_config

from service.db import create_db_engine
from service.models import Job, Tenant
from service.settings import Settings, get_settings
from worker.commands import celery_worker_argv

ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REMIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TABLES = (
    "job_events",
    "job_metrics",
    "checkpoints",
    "job_attempts",
    "jobs",
    "datasets",
    "api_keys",
    "tenants",
)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new database named remix_worker_<hex>, migrated to head, dropped at the end."""
    name = f"remix_worker_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _upgrade_head(url)
    yield url
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _upgrade_head(url: str) -> None:
    # A subprocess keeps alembic's env.py (which reads REMIX_DATABASE_URL) out of this process' caches.
    env = {**os.environ, "REMIX_DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
    )


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(tmp_path / "artifacts"),
        heartbeat_seconds=0.5,
        stale_after_seconds=3.0,
        max_attempts=3,
    )


@pytest.fixture
def make_job(sessions: sessionmaker[Session]) -> Callable[..., Job]:
    """make_job(**column_overrides) -> a committed queued Job of a fresh tenant."""

    def make(**overrides: Any) -> Job:
        config = overrides.pop("config", tiny_job_config())
        with sessions.begin() as session:
            tenant = Tenant(name=f"tenant-{uuid.uuid4().hex[:8]}")
            session.add(tenant)
            session.flush()
            job = Job(
                tenant_id=tenant.id,
                base_model=config["model"]["name_or_path"],
                config=config,
                total_steps=config["total_steps"],
                **overrides,
            )
            session.add(job)
        return job

    return make


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """start_worker(name) -> a real `celery worker -Q gpu,maintenance -c 1` subprocess."""
    started: list[ManagedProcess] = []

    def start(name: str = "worker", beat: bool = False) -> ManagedProcess:
        args = celery_worker_argv(
            [settings.task_queue, "maintenance"],
            f"{name}@%h",
            beat_schedule=tmp_path / f"{name}-beat-schedule" if beat else None,
            extra=["--without-gossip", "--without-mingle"],
        )
        process = ManagedProcess(args, service_env(settings), tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # Code under test may call get_settings(); never let one test's environment leak into another.
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
