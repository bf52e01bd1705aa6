"""Helpers every integration test suite shares: throwaway Postgres databases, API callers with keys,
problem+json assertions, polling, and subprocesses (API, workers) pointed at the test resources,
among them the one way an API subprocess is started and waited for (`start_api`, `running_api`), and
a stand-in for a tenant's webhook receiver (`WebhookReceiver`) with its own signature check.

The suites import these through their own `*_testing.py` modules, which add what only they need.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from service import lifecycle
from service.db import session_factory
from service.repositories.tenants import create_api_key, get_or_create_tenant
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN_PG = os.environ.get("REMIX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# ----------------------------------------------------------------------------- databases and callers


def create_database(admin_url: str = ADMIN_PG) -> str:
    """A new empty database on the server of `admin_url`; returns its SQLAlchemy URL."""
    name = f"remix_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(url: str, admin_url: str = ADMIN_PG) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Caller:
    tenant_id: uuid.UUID
    key: str
    headers: dict[str, str]


def make_caller(database_url: str, *, admin: bool = False) -> Caller:
    """A new tenant with one API key (an admin key with `admin`)."""
    with session_factory(database_url)() as session:
        tenant = get_or_create_tenant(session, f"tenant-{uuid.uuid4().hex[:10]}")
        _, key = create_api_key(session, tenant, name="test", is_admin=admin)
        return Caller(tenant.id, key, {"Authorization": f"Bearer {key}"})


def assert_problem(response: Any, status: int, detail_part: str = "") -> dict[str, Any]:
    """An RFC 9457 problem document with this status whose detail contains `detail_part`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    assert detail_part in body["detail"], body["detail"]
    return body


@contextmanager
def redis_connection(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.ping()
    yield client
    client.close()


@contextmanager
def api_settings(
    database_url: str,
    redis_client: redis.Redis,
    redis_url: str,
    artifacts_dir: Path,
    *,
    queue_prefix: str,
    upload_limit: int,
) -> Iterator[Settings]:
    """Settings of an API under test: its own broker queue (deleted afterwards) and artifact folder."""
    queue = f"{queue_prefix}-{uuid.uuid4().hex[:8]}"
    yield Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(artifacts_dir),
        task_queue=queue,
        max_upload_bytes=upload_limit,
        sse_poll_seconds=0.05,
    )
    # The queue and the exchange bindings kombu records for it.
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


# ----------------------------------------------------------------------------- jobs


def claim_as_worker(
    sessions: sessionmaker[Session], job_id: uuid.UUID | str, *, worker_id: str = "test-worker"
) -> lifecycle.JobWriter:
    """Claim a queued job exactly as the worker does (`service.lifecycle.claim_job`: queued -> running,
    a JobAttempt and a 'started' event) and return the `JobWriter` of that attempt, through which
    the test then writes metrics, events, checkpoints and the outcome as the worker would."""
    claim = lifecycle.claim_job(sessions, uuid.UUID(str(job_id)), worker_id=worker_id)
    assert claim is not None, f"job {job_id} could not be claimed"
    return lifecycle.JobWriter(sessions, claim.job_id, claim.attempt)


def tiny_job_config(**overrides: Any) -> dict[str, Any]:
    """A remix-grpo job on the builtin tiny model, small enough for a CPU test."""
    config: dict[str, Any] = {
        "model": {"name_or_path": "builtin:tiny-arith"},
        "data": {"train_path": "builtin:addition", "eval_size": 32},
        "rollout": {"prompts_per_step": 8, "group_size": 4, "max_new_tokens": 8},
        "algorithm": {"name": "remix-grpo", "reincarnation_step": 2, "minibatch_size": 32},
        "optim": {"lr": 1e-4},
        "total_steps": 4,
        "checkpoint_every": 2,
        "log_completions": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


# ----------------------------------------------------------------------------- waiting


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail[-6000:]}")


# ----------------------------------------------------------------------------- subprocesses


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of an API/worker subprocess pointed at `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    fields = {
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "ARTIFACTS_DIR": settings.artifacts_dir,
        "TASK_QUEUE": settings.task_queue,
        "HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "STALE_AFTER_SECONDS": str(settings.stale_after_seconds),
        "MAX_ATTEMPTS": str(settings.max_attempts),
        "SSE_POLL_SECONDS": str(settings.sse_poll_seconds),
        "MAX_UPLOAD_BYTES": str(settings.max_upload_bytes),
        "DB_RETRY_AFTER_SECONDS": str(settings.db_retry_after_seconds),
    }
    if settings.node_address is not None:
        fields["NODE_ADDRESS"] = settings.node_address
    fields["RENDEZVOUS_TIMEOUT_SECONDS"] = str(settings.rendezvous_timeout_seconds)
    env.update({f"REMIX_{k}": v for k, v in fields.items()})
    env.update(PYTHONUNBUFFERED="1", **extra)
    if "REMIX_CACHE_DIR" in os.environ:
        env["REMIX_CACHE_DIR"] = os.environ["REMIX_CACHE_DIR"]
    return env


class ManagedProcess:
    """A subprocess in its own process group, logging to a file; `kill()` is a whole-machine crash."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT) -> None:
        self.args, self.env, self.log_path, self.cwd = args, env, log_path, cwd
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker and its pool children): nothing gets to clean up."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal_group(signal.SIGKILL)  # pool children outlive a parent killed mid-shutdown
        if not self._log.closed:
            self._log.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def start_api(settings: Settings, log_path: Path, **extra_env: str) -> tuple[ManagedProcess, str]:
    """uvicorn serving service.main:app in a subprocess; returns (process, base URL) once /healthz answers."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)]
    api = ManagedProcess(args + ["--log-level", "warning"], service_env(settings, **extra_env), log_path)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert api.alive(), api.log_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=60, what="the API to answer /healthz", on_timeout=api.log_text)
    except BaseException:
        api.stop()
        raise
    return api, url


@contextmanager
def running_api(settings: Settings, log_path: Path, **extra_env: str) -> Iterator[str]:
    """`start_api` for the length of a `with` block; yields the base URL and stops the API afterwards."""
    api, url = start_api(settings, log_path, **extra_env)
    try:
        yield url
    finally:
        api.stop()


# ----------------------------------------------------------------------------- webhook receiver


def standard_webhooks_signature_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of the Standard Webhooks spec, written here from the spec and not taken
    from the service: HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" keyed with the
    base64-decoded secret after "whsec_", compared with each space-separated "v1,<base64>" entry."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id, timestamp = lowered["webhook-id"], lowered["webhook-timestamp"]
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    for entry in lowered["webhook-signature"].split(" "):
        version, _, candidate = entry.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
            return True
    return False


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed_with(self, secret: str) -> bool:
        return standard_webhooks_signature_valid(secret, self.headers, self.body)


@dataclass
class WebhookReceiver:
    """A stand-in for a tenant's webhook receiver (an outside service): a real HTTP server on
    127.0.0.1, in a thread, answering the n-th POST with `statuses[n]` (the last repeats) and the
    body `answer`, and recording every request. `redirect_to` makes a 3xx point there."""

    statuses: list[int] = field(default_factory=lambda: [200])
    answer: bytes = b"ok"
    redirect_to: str | None = None
    received: list[ReceivedWebhook] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                count = len(owner.received)
                status = owner.statuses[min(count, len(owner.statuses) - 1)]
                owner.received.append(ReceivedWebhook({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                if owner.redirect_to and 300 <= status < 400:
                    self.send_header("Location", owner.redirect_to)
                self.send_header("Content-Length", str(len(owner.answer)))
                self.end_headers()
                self.wfile.write(owner.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
