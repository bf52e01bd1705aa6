"""Throwaway servers and processes for fault tests: a private Redis, a private PostgreSQL cluster, the
API under uvicorn and Celery workers as subprocesses. Fault tests stop and restart these, never the
shared servers on 5432/6379 that other test sessions use.

Each class starts on a free loopback port, can be stopped (gracefully or with SIGKILL /
`pg_ctl -m immediate`) and restarted on the same port and data, and removes everything it
created in `close()`. The API subprocess is testing_support.start_api, the one every suite uses.
The fixtures `redis_server` and `postgres_server` (registered by conftest.py)
hand them to tests and clean up afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from testing_support import ManagedProcess, free_port, service_env, wait_for

from service.settings import Settings
from worker.commands import celery_worker_argv

# ----------------------------------------------------------------------------- Redis


class RedisServer:
    """`redis-server` on a free port, without persistence: a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed; the Redis fault tests need the binary")
        self.workdir = workdir
        self.port = free_port()
        self.process: ManagedProcess | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--daemonize", "no", "--dir", str(self.workdir)]
        self.process = ManagedProcess(args, dict(os.environ), self.workdir / "redis.log", cwd=self.workdir)
        wait_for(self._answers, timeout=20, what=f"redis on port {self.port}", on_timeout=self.process.log_text)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """A crash: SIGKILL, so clients see their connections drop."""
        if self.process is not None:
            self.process.kill()
            self.process.stop()
            self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()


# ----------------------------------------------------------------------------- PostgreSQL


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"PostgreSQL's {name} was not found (looked in /usr/lib/postgresql/*/bin and PATH)")
    return path


class PostgresServer:
    """A private cluster (`initdb` in a temporary folder) on a free port, trust auth, fsync off.

    `initdb` refuses to run as root, so as root the cluster belongs to the `postgres` system user
    and the commands run through `runuser`."""

    def __init__(self) -> None:
        self.owner = self._owner()
        self.root = Path(tempfile.mkdtemp(prefix="remix-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self.owner is not None:
            shutil.chown(self.root, user=self.owner)
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    @staticmethod
    def _owner() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs a 'postgres' system user to own the throwaway cluster")
        return "postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args) if self.owner is None else ["runuser", "-u", self.owner, "--", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        pg_ctl = _postgres_bin("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash: every connection drops, nothing is shut down cleanly."""
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.sqlalchemy_url(name)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                (["runuser", "-u", self.owner, "--"] if self.owner else [])
                + [_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- API and workers


def start_worker(settings: Settings, log_path: Path, name: str, **extra_env: str) -> ManagedProcess:
    """A real `celery worker` consuming the training and maintenance queues, one job at a time."""
    args = celery_worker_argv(
        [settings.task_queue, "maintenance"],
        f"{name}@%h",
        extra=["--without-gossip", "--without-mingle", "--without-heartbeat"],
    )
    return ManagedProcess(args, service_env(settings, **extra_env), log_path)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis the test may crash and restart."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster the test may crash and restart; deleted afterwards."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()
