"""Pausing and resuming jobs with RemixClient (pause_job, resume_job) and the CLI (`remix pause`,
`remix resume`) against the real API."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller, claim_as_worker
from typer.testing import CliRunner

from remix_client import Conflict, NotFound, RemixClient
from remix_client.cli import ExitCode, app
from service.models import JobStatus

runner = CliRunner()


@pytest.fixture
def cli(base_url: str, alice: Caller) -> Any:
    """Run `remix ARGS` as alice; returns click's Result (stdout and stderr kept apart)."""

    def invoke(*args: str) -> Any:
        environment = {"REMIX_URL": base_url, "REMIX_API_KEY": alice.key, "COLUMNS": "200"}
        return runner.invoke(app, list(args), env=environment)

    return invoke


def test_a_queued_job_is_paused_and_resumed(remix: RemixClient) -> None:
    job = remix.create_job({"total_steps": 3})
    paused = remix.pause_job(job.id)
    assert (paused.id, paused.status) == (job.id, "paused")
    assert not paused.is_terminal
    assert remix.pause_job(job.id).status == "paused"  # idempotent
    resumed = remix.resume_job(job.id)
    assert resumed.status == "queued"
    assert remix.resume_job(job.id).status == "queued"  # idempotent
    kinds = [event.kind for event in remix.events(job.id)]
    assert kinds == ["queued", "paused", "resume_requested"]


def test_a_running_job_is_pausing_until_its_worker_stops(remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    job = remix.create_job({"total_steps": 3})
    writer = claim_as_worker(sessions, job.id)
    assert remix.pause_job(job.id).status == "pausing"
    with pytest.raises(Conflict) as refused:  # not stopped yet: nothing to resume
        remix.resume_job(job.id)
    assert "only a paused job can be resumed" in str(refused.value)
    assert writer.pause(step=0, message="paused after step 0")
    assert remix.get_job(job.id).status == "paused"


def test_a_finished_job_cannot_be_paused_and_another_tenants_job_does_not_exist(
    remix: RemixClient, sessions: sessionmaker[Session], base_url: str, bob: Caller
) -> None:
    job = remix.create_job({"total_steps": 3})
    claim_as_worker(sessions, job.id).finish(JobStatus.succeeded, step=3, message="done")
    with pytest.raises(Conflict):
        remix.pause_job(job.id)
    with pytest.raises(Conflict):
        remix.resume_job(job.id)
    with RemixClient(base_url, bob.key, timeout=10, backoff_base=0.01) as other:
        with pytest.raises(NotFound):
            other.pause_job(job.id)
        with pytest.raises(NotFound):
            other.resume_job(job.id)


def test_cli_pause_and_resume(cli: Any, remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    job = remix.create_job({"total_steps": 3})
    paused = cli("pause", str(job.id))
    assert paused.exit_code == 0, paused.output
    assert f"job {job.id} paused" in paused.stdout
    resumed = cli("resume", str(job.id))
    assert resumed.exit_code == 0, resumed.output
    assert f"job {job.id} queued" in resumed.stdout
    assert remix.get_job(job.id).status == "queued"

    claim_as_worker(sessions, job.id).finish(JobStatus.cancelled, step=0, message="cancelled")
    refused = cli("pause", str(job.id))
    assert refused.exit_code == ExitCode.CONFLICT and "409 Conflict" in refused.stderr
    refused = cli("resume", str(job.id))
    assert refused.exit_code == ExitCode.CONFLICT and "409 Conflict" in refused.stderr
