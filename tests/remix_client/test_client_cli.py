"""The `remix` command line against the live API: output and exit statuses of every command."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from client_testing import finish, record_steps, start_job, store_checkpoint, write_jsonl
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller, make_caller
from typer.testing import CliRunner

from remix_client import RemixClient
from remix_client.cli import ExitCode, app
from service.db import session_factory
from service.models import Job, JobStatus
from service.settings import Settings

runner = CliRunner()


@pytest.fixture
def cli(base_url: str, alice: Caller) -> Any:
    """Run `remix ARGS` as alice; returns click's Result (stdout and stderr kept apart)."""

    def invoke(*args: str, key: str | None = alice.key, **env: str) -> Any:
        environment = {"REMIX_URL": base_url, "REMIX_API_KEY": key or "", "COLUMNS": "200", **env}
        return runner.invoke(app, list(args), env=environment)

    return invoke


def run_worker_soon(database_url: str, tenant_id: uuid.UUID, status: JobStatus, steps: int = 3) -> threading.Thread:
    """In the background, play the worker for the tenant's next queued job: claim, report steps, finish."""

    def work() -> None:
        deadline = time.monotonic() + 20
        with session_factory(database_url)() as db:
            while time.monotonic() < deadline:
                query = select(Job.id).where(Job.tenant_id == tenant_id, Job.status == "queued")
                job_id = db.scalar(query.order_by(Job.created_at.desc()))
                if job_id is not None:
                    break
                db.rollback()
                time.sleep(0.05)
            sessions = session_factory(database_url)
            start_job(sessions, job_id)
            record_steps(sessions, job_id, range(1, steps + 1))
            finish(sessions, job_id, status, error="diverged" if status is JobStatus.failed else None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def job_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text("total_steps: 3\nalgorithm:\n  name: remix-grpo\n  off_policy_fraction: 0.3\n")
    return path


def test_submit_a_bare_config_prints_the_job_id(cli: Any, job_yaml: Path, remix: RemixClient) -> None:
    result = cli("submit", str(job_yaml))
    assert result.exit_code == ExitCode.OK, result.output
    job = remix.get_job(result.stdout.strip())
    assert job.config["algorithm"]["off_policy_fraction"] == 0.3 and job.total_steps == 3
    assert f"job {job.id} queued (3 steps)" in result.stderr


def test_submit_a_job_request_with_an_idempotency_key(cli: Any, tmp_path: Path, remix: RemixClient) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "nightly", "base_model": "builtin:tiny-arith", "config": {"total_steps": 2}}))
    first = cli("submit", str(path), "--idempotency-key", "nightly-1")
    again = cli("submit", str(path), "--idempotency-key", "nightly-1")
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout
    assert remix.get_job(first.stdout.strip()).name == "nightly"


def test_submit_rejections_are_usage_errors(cli: Any, tmp_path: Path) -> None:
    invalid = tmp_path / "bad.yaml"
    invalid.write_text("total_steps: 3\nalgorithm: {clip_eps: -1}\n")
    result = cli("submit", str(invalid))
    assert result.exit_code == ExitCode.USAGE
    assert "422 Validation failed" in result.stderr and "config.algorithm.clip_eps" in result.stderr
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    result = cli("submit", str(not_a_mapping))
    assert result.exit_code == ExitCode.USAGE and "expected a mapping" in result.output
    extra = tmp_path / "extra.yaml"
    extra.write_text("config: {}\nsteps: 3\n")
    assert "unknown keys next to 'config': steps" in cli("submit", str(extra)).output


def test_submit_wait_exits_with_the_job_outcome(cli: Any, job_yaml: Path, database_url: str, alice: Caller) -> None:
    worker = run_worker_soon(database_url, alice.tenant_id, JobStatus.failed)
    result = cli("submit", str(job_yaml), "--wait")
    worker.join()
    assert result.exit_code == ExitCode.FAILED
    assert result.stdout.strip().splitlines()[-1].endswith(" failed")


def test_submit_follow_shows_progress_until_success(cli: Any, job_yaml: Path, database_url: str, alice: Caller) -> None:
    worker = run_worker_soon(database_url, alice.tenant_id, JobStatus.succeeded)
    result = cli("submit", str(job_yaml), "--follow")
    worker.join()
    assert result.exit_code == ExitCode.OK, result.output
    job_id = result.stdout.splitlines()[0]
    assert f"job {job_id} succeeded" in result.stdout
    assert "queued: job accepted" in result.stdout


def test_follow_a_cancelled_job(cli: Any, remix: RemixClient) -> None:
    job = remix.create_job({"total_steps": 3})
    remix.cancel_job(job.id)
    result = cli("follow", str(job.id))
    assert result.exit_code == ExitCode.CANCELLED
    assert f"job {job.id} cancelled" in result.stdout and "cancelled while queued" in result.stdout


def test_list_and_show(cli: Any, remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    queued = remix.create_job({"total_steps": 3}, name="waiting")
    done = remix.create_job({"total_steps": 3}, name="finished")
    finish(sessions, start_job(sessions, done.id))
    listing = cli("list")
    assert listing.exit_code == 0
    assert str(queued.id) in listing.stdout and str(done.id) in listing.stdout and "2 job(s)" in listing.stdout
    only_done = cli("list", "--status", "succeeded", "--limit", "5")
    assert str(done.id) in only_done.stdout and str(queued.id) not in only_done.stdout
    assert "1 job(s)" in cli("list", "--limit", "1").stdout

    shown = cli("show", str(done.id))
    assert shown.exit_code == 0
    for text in ("finished", "succeeded", "0/3", "builtin:tiny-arith", "queued: job accepted"):
        assert text in shown.stdout


def test_cancel_then_conflict(cli: Any, remix: RemixClient) -> None:
    job = remix.create_job({"total_steps": 3})
    result = cli("cancel", str(job.id))
    assert result.exit_code == 0 and f"job {job.id} cancelled" in result.stdout
    again = cli("cancel", str(job.id), "--checkpoint")
    assert again.exit_code == ExitCode.CONFLICT and "409 Conflict" in again.stderr


def test_download_latest_and_missing_step(
    cli: Any, remix: RemixClient, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job = remix.create_job({"total_steps": 10})
    job_id = start_job(sessions, job.id)
    for step in (5, 10):
        store_checkpoint(settings, sessions, job_id, step, {"config.json": b'{"step": %d}' % step})
    result = cli("download", str(job_id), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    assert folder == tmp_path / "step-000010" and (folder / "config.json").read_bytes() == b'{"step": 10}'
    archive = cli("download", str(job_id), "--step", "5", "-o", str(tmp_path), "--no-extract")
    assert Path(archive.stdout.strip()).name == f"{job_id}-step-000005.tar.gz"
    missing = cli("download", str(job_id), "--step", "7", "-o", str(tmp_path))
    assert missing.exit_code == ExitCode.NOT_FOUND and "step 7 not found" in missing.stderr


def test_datasets_upload_show_list(cli: Any, tmp_path: Path) -> None:
    rows = [{"q": f"{i}+1=", "a": str(i + 1)} for i in range(3)]
    path = write_jsonl(tmp_path / "inc.jsonl", rows)
    uploaded = cli("datasets", "upload", str(path), "--prompt-field", "q", "--answer-field", "a")
    assert uploaded.exit_code == 0, uploaded.output
    dataset_id = uploaded.stdout.splitlines()[0]
    shown = cli("datasets", "show", dataset_id)
    assert shown.exit_code == 0
    for text in ("inc.jsonl", "3 rows", "prompt (q)", "answer (a)", "2+1=", "3"):
        assert text in shown.stdout
    assert dataset_id in cli("datasets", "list").stdout
    too_big = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "x" * 100, "answer": "1"}] * 100)
    rejected = cli("datasets", "upload", str(too_big))
    assert rejected.exit_code == ExitCode.USAGE and "413" in rejected.stderr


def test_error_exit_statuses(cli: Any) -> None:
    missing = cli("show", str(uuid.uuid4()))
    assert missing.exit_code == ExitCode.NOT_FOUND and "404 Not Found" in missing.stderr
    bad_key = cli("list", key="rmx_" + "x" * 40)
    assert bad_key.exit_code == ExitCode.AUTH and "Invalid or revoked API key" in bad_key.stderr
    no_key = cli("list", key=None)
    assert no_key.exit_code == ExitCode.AUTH and "no API key" in no_key.stderr
    unreachable = cli("--url", "http://127.0.0.1:9", "--max-retries", "1", "list")
    assert unreachable.exit_code == ExitCode.UNAVAILABLE and "error:" in unreachable.stderr
    assert cli("list", "--limit", "0").exit_code == ExitCode.USAGE


def test_keys_create_makes_a_working_key(cli: Any, base_url: str, admin: Caller) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:6]}"
    created_tenant = cli("tenants", "create", tenant, key=admin.key)
    assert created_tenant.exit_code == 0, created_tenant.output
    assert f"tenant {tenant} created" in created_tenant.stderr
    result = cli("keys", "create", "--tenant", tenant, "--name", "ci", key=admin.key)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("rmx_") and "not shown again" in result.stderr
    with RemixClient(base_url, key) as client:
        assert client.list_jobs_page().data == []
        [row] = client.list_keys()
    assert str(row.tenant_id) == created_tenant.stdout.strip() and row.name == "ci"
    # the tenant is also accepted by id
    by_id = cli("keys", "create", "--tenant", str(row.tenant_id), key=admin.key)
    assert by_id.exit_code == 0 and by_id.stdout.strip().startswith("rmx_")
    assert tenant in cli("tenants", "list", key=admin.key).stdout
    missing = cli("keys", "create", "--tenant", "no-such-tenant", key=admin.key)
    assert missing.exit_code == ExitCode.NOT_FOUND and "no tenant named 'no-such-tenant'" in missing.stderr


def test_a_tenant_key_cannot_administer_tenants(cli: Any, alice: Caller) -> None:
    created = cli("tenants", "create", f"sneaky-{uuid.uuid4().hex[:6]}")
    assert created.exit_code == ExitCode.AUTH and "403 Forbidden" in created.stderr
    listed = cli("tenants", "list")
    assert listed.exit_code == ExitCode.AUTH and "admin API key" in listed.stderr
    own_tenant = cli("keys", "create", "--tenant", str(alice.tenant_id))
    assert own_tenant.exit_code == ExitCode.AUTH and "403 Forbidden" in own_tenant.stderr


def test_keys_list_rotate_and_revoke(cli: Any, base_url: str, database_url: str, bob: Caller) -> None:
    caller = make_caller(database_url)
    listed = cli("keys", "list", key=caller.key)
    assert listed.exit_code == 0, listed.output
    assert "1 key(s)" in listed.stdout and caller.key[:12] in listed.stdout and caller.key not in listed.stdout
    with RemixClient(base_url, caller.key) as client:
        [old] = client.list_keys()

    rotated = cli("keys", "rotate", str(old.id), key=caller.key)
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip().splitlines()[0]
    assert new_key.startswith("rmx_") and new_key != caller.key and "not shown again" in rotated.stderr
    refused = cli("keys", "list", key=caller.key)
    assert refused.exit_code == ExitCode.AUTH and "Invalid or revoked API key" in refused.stderr
    after = cli("keys", "list", key=new_key)
    assert after.exit_code == 0 and "2 key(s)" in after.stdout

    # another tenant's key is not found, and stays usable
    with RemixClient(base_url, bob.key) as client:
        [bobs] = client.list_keys()
    foreign = cli("keys", "revoke", str(bobs.id), key=new_key)
    assert foreign.exit_code == ExitCode.NOT_FOUND and "404 Not Found" in foreign.stderr
    assert cli("list", key=bob.key).exit_code == 0

    with RemixClient(base_url, new_key) as client:
        [newest, _old] = client.list_keys()
    revoked = cli("keys", "revoke", str(newest.id), key=new_key)
    assert revoked.exit_code == 0 and f"key {newest.id} revoked" in revoked.stderr
    gone = cli("list", key=new_key)
    assert gone.exit_code == ExitCode.AUTH and "Invalid or revoked API key" in gone.stderr
