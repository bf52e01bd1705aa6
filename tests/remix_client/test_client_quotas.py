"""RemixClient and `remix` against the real API for quotas and usage: an admin sets a tenant's quotas,
the tenant reads them and its usage, and a spent quota is a QuotaExceeded error (CLI exit status 8)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller, claim_as_worker
from typer.testing import CliRunner

from remix_client import Forbidden, QuotaExceeded, RemixClient, TenantQuotas, UsageReport
from remix_client.cli import ExitCode, app

STEP = {"fresh_samples": 16, "gen_tokens_per_s": 400.0, "rollout_s": 0.5, "learner_tokens_per_s": 100.0}
STEP |= {"learner_s": 2.0, "step_s": 3.0}


def _client(base_url: str, key: str) -> RemixClient:
    return RemixClient(base_url, key, timeout=10, backoff_base=0.01, max_retries=0)


def _cli(base_url: str, key: str, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"REMIX_URL": base_url, "REMIX_API_KEY": key})


def test_quotas_and_usage_through_the_client(
    base_url: str, alice: Caller, admin: Caller, sessions: sessionmaker[Session]
) -> None:
    with _client(base_url, admin.key) as operator, _client(base_url, alice.key) as user:
        job = user.create_job(config={"total_steps": 3})
        writer = claim_as_worker(sessions, job.id)
        writer.record_step(1, STEP)
        writer.record_step(2, STEP)

        set_to = operator.set_quotas(alice.tenant_id, max_queued_jobs=0, max_generated_tokens=10_000)
        assert isinstance(set_to, TenantQuotas) and set_to.limits.max_queued_jobs == 0
        own = user.quotas()
        assert own.tenant_id == alice.tenant_id and own.limits.max_generated_tokens == 10_000
        assert own.usage.generated_tokens == 400 and own.running_jobs == 1
        assert operator.quotas(tenant_id=alice.tenant_id).overrides == own.overrides
        with pytest.raises(Forbidden):
            user.set_quotas(alice.tenant_id, max_queued_jobs=5)

        with pytest.raises(QuotaExceeded) as refused:
            user.create_job(config={"total_steps": 3})
        assert (refused.value.status, refused.value.quota, refused.value.limit) == (429, "max_queued_jobs", 0)

        report = user.usage()
        assert isinstance(report, UsageReport) and report.totals.steps == 2
        assert [(u.job_id, u.fresh_rollouts, u.trained_tokens) for u in report.jobs] == [(job.id, 32, 400)]
        later = user.usage(start=datetime.now(UTC) + timedelta(hours=1))
        assert later.totals.steps == 0 and later.jobs == []
        assert user.job_usage(job.id).device_seconds == 6.0


def test_remix_usage_and_quotas_commands(
    base_url: str, admin: Caller, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with _client(base_url, admin.key) as operator:
        tenant = operator.create_tenant(f"cli-quotas-{uuid.uuid4().hex[:6]}")
        key = operator.create_key(tenant.id).key
    with _client(base_url, key) as user:
        job = user.create_job(config={"total_steps": 3})
    claim_as_worker(sessions, job.id).record_step(1, STEP)

    set_result = _cli(base_url, admin.key, "quotas", "set", "--tenant", tenant.name, "--max-running-jobs", "2")
    assert set_result.exit_code == 0, set_result.output
    again = _cli(base_url, admin.key, "quotas", "set", "--tenant", str(tenant.id), "--max-device-seconds", "3")
    assert again.exit_code == 0, again.output
    shown = _cli(base_url, key, "quotas", "get", "--json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["overrides"]["max_running_jobs"] == 2  # the first set is kept by the second
    assert document["limits"]["max_device_seconds"] == 3
    table = _cli(base_url, key, "quotas", "get")
    assert "max_running_jobs" in table.stdout and "unlimited" in table.stdout

    reset = _cli(base_url, admin.key, "quotas", "set", "--tenant", tenant.name, "--default", "max_running_jobs")
    assert reset.exit_code == 0, reset.output
    assert _client(base_url, key).quotas().overrides.max_running_jobs is None
    bad = _cli(base_url, admin.key, "quotas", "set", "--tenant", tenant.name, "--default", "max_gpus")
    assert bad.exit_code == ExitCode.USAGE
    assert _cli(base_url, key, "quotas", "set", "--tenant", tenant.name).exit_code == ExitCode.AUTH

    usage = _cli(base_url, key, "usage", "--json")
    assert usage.exit_code == 0, usage.output
    assert json.loads(usage.stdout)["totals"]["generated_tokens"] == 200
    one = _cli(base_url, key, "usage", "--job", str(job.id))
    assert one.exit_code == 0 and str(job.id) in one.stdout
    window = _cli(base_url, key, "usage", "--from", "2000-01-01T00:00:00", "--to", "2000-01-02T00:00:00", "--json")
    assert window.exit_code == 0 and json.loads(window.stdout)["jobs"] == []

    # the device-seconds budget (3) is spent: a submission is refused, and the CLI says which quota
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"config": {"total_steps": 2}}))
    refused = _cli(base_url, key, "submit", str(job_file))
    assert refused.exit_code == ExitCode.QUOTA, refused.output
    assert "quota max_device_seconds: limit 3, usage 3" in refused.stderr
