"""RemixClient job operations against the real API: create (idempotent), read, list, cancel,
metrics, events, wait, checkpoints and checkpoint download."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest
from client_testing import add_event, finish, record_steps, start_job, store_checkpoint
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller

from remix_client import Conflict, Job, NotFound, RemixClient
from service.models import JobStatus
from service.settings import Settings


def test_create_job_returns_a_typed_queued_job(remix: RemixClient) -> None:
    job = remix.create_job(
        {"total_steps": 7, "algorithm": {"off_policy_fraction": 0.25}},
        base_model="builtin:tiny-arith",
        name="first",
    )
    assert isinstance(job, Job) and isinstance(job.id, uuid.UUID)
    assert (job.status, job.name, job.total_steps, job.base_model) == (
        "queued",
        "first",
        7,
        "builtin:tiny-arith",
    )
    assert job.config["algorithm"]["off_policy_fraction"] == 0.25
    assert job.idempotency_key is not None and uuid.UUID(job.idempotency_key).version == 4
    assert not job.is_terminal
    assert remix.get_job(job.id) == job


def test_create_job_with_the_same_key_returns_the_same_job(remix: RemixClient) -> None:
    first = remix.create_job({"total_steps": 3}, idempotency_key="submit-once")
    again = remix.create_job({"total_steps": 3}, idempotency_key="submit-once")
    assert again.id == first.id
    other = remix.create_job({"total_steps": 3})
    assert other.id != first.id and other.idempotency_key != first.idempotency_key


def test_list_jobs_follows_every_page(base_url: str, database_url: str) -> None:
    from testing_support import make_caller

    caller = make_caller(database_url)
    with RemixClient(base_url, caller.key) as client:
        created = [client.create_job({"total_steps": 2}, name=f"job-{i}").id for i in range(5)]
        page = client.list_jobs_page(limit=2)
        assert len(page.data) == 2 and page.has_more and page.next_cursor
        listed = [job.id for job in client.list_jobs(page_size=2)]
        assert listed == created[::-1]  # newest first, each exactly once
        assert client.list_jobs_page(status="succeeded").data == []


def test_cancel_a_queued_job_then_conflict(remix: RemixClient) -> None:
    job = remix.create_job({"total_steps": 3})
    cancelled = remix.cancel_job(job.id)
    assert cancelled.status == "cancelled" and cancelled.is_terminal
    with pytest.raises(Conflict) as info:
        remix.cancel_job(job.id)
    assert info.value.status == 409 and "already cancelled" in info.value.detail


def test_cancel_a_running_job_with_checkpoint(remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    job = remix.create_job({"total_steps": 3})
    start_job(sessions, job.id)
    cancelling = remix.cancel_job(job.id, checkpoint=True)
    assert (cancelling.status, cancelling.cancel_requested, cancelling.checkpoint_on_cancel) == (
        "cancelling",
        True,
        True,
    )


def test_metrics_events_and_wait(remix: RemixClient, sessions: sessionmaker[Session]) -> None:
    job = remix.create_job({"total_steps": 4})
    job_id = start_job(sessions, job.id)
    record_steps(sessions, job_id, range(1, 5))
    add_event(sessions, job_id, "evaluation", 4, "accuracy 0.5")
    finish(sessions, job_id, JobStatus.succeeded)

    assert [m.step for m in remix.metrics(job.id)] == [1, 2, 3, 4]
    window = remix.metrics(job.id, from_step=2, to_step=3)
    assert [(m.step, m.metrics["reward_mean"]) for m in window] == [(2, 0.2), (3, 0.3)]
    events = remix.events(job.id)
    assert [e.kind for e in events] == ["queued", "started", "evaluation", "succeeded"]  # claim and finish write theirs
    assert [e.kind for e in remix.events(job.id, after=events[0].id)] == ["started", "evaluation", "succeeded"]
    done = remix.wait(job.id, poll_interval=0.05, timeout=10)
    assert done.status == "succeeded" and done.is_terminal


def test_wait_times_out_on_a_job_that_does_not_end(remix: RemixClient) -> None:
    job = remix.create_job({"total_steps": 3})
    with pytest.raises(TimeoutError, match="still queued"):
        remix.wait(job.id, poll_interval=0.05, timeout=0.2)


def test_checkpoints_and_download(
    remix: RemixClient, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job = remix.create_job({"total_steps": 20})
    job_id = start_job(sessions, job.id)
    weights = bytes(range(256)) * 64
    for step in (10, 20):
        files = {
            "config.json": b'{"step": %d}' % step,
            "model.safetensors": weights,
            "trainer_state/rng.pt": b"x",
        }
        store_checkpoint(settings, sessions, job_id, step, files)

    listed = remix.checkpoints(job.id)
    assert [c.step for c in listed] == [10, 20]
    assert listed[0].download_url == f"/v1/jobs/{job_id}/checkpoints/10/download"

    folder = remix.download_checkpoint(job.id, dest_dir=tmp_path / "latest")  # default: latest step
    assert folder == tmp_path / "latest" / "step-000020"
    assert (folder / "config.json").read_bytes() == b'{"step": 20}'
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not (folder / "trainer_state").exists()
    assert list((tmp_path / "latest").iterdir()) == [folder]  # the archive was removed

    archive = remix.download_checkpoint(job.id, 10, tmp_path / "raw", extract=False)
    assert archive.name == f"{job_id}-step-000010.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as tar:
        assert sorted(tar.getnames()) == ["step-000010/config.json", "step-000010/model.safetensors"]

    with pytest.raises(NotFound, match="step 11 not found"):
        remix.download_checkpoint(job.id, 11, tmp_path / "missing")


def test_download_without_checkpoints_is_not_found(remix: RemixClient, tmp_path: Path) -> None:
    job = remix.create_job({"total_steps": 3})
    with pytest.raises(NotFound, match="no checkpoint"):
        remix.download_checkpoint(job.id, dest_dir=tmp_path)


def test_other_tenants_jobs_do_not_exist(remix: RemixClient, base_url: str, bob: Caller) -> None:
    job = remix.create_job({"total_steps": 3})
    with RemixClient(base_url, bob.key) as bobs, pytest.raises(NotFound) as info:
        bobs.get_job(job.id)
    assert info.value.status == 404 and str(job.id) in info.value.detail


def test_config_schema_lists_the_hyperparameters(remix: RemixClient) -> None:
    schema = remix.config_schema()
    assert {"total_steps", "algorithm", "rollout"} <= schema["properties"].keys()
