"""Checkpoint listing and tar.gz download of a Hugging Face folder from the artifact store."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.artifacts import LocalArtifactStore, checkpoint_key
from service.lifecycle import JobWriter
from service.settings import Settings

HF_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "generation_config.json": b"{}",
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b"{}",
    "model.safetensors": os.urandom(3 * 1024 * 1024 + 17),  # several chunks, not a block multiple
}
STATE_FILES = {"trainer_state/optimizer.pt": b"adam", "trainer_state/replay.pt": b"buffer"}


def _job_with_checkpoint(
    client: TestClient, caller: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path, step: int
) -> JobWriter:
    """A running job whose worker saved the checkpoint of `step` (files in the store, row registered)."""
    job_id = submit(client, caller)["id"]
    writer = claim_as_worker(sessions, job_id)
    folder = tmp_path / f"step-{step}"
    for rel, data in (HF_FILES | STATE_FILES).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    store = LocalArtifactStore(settings.artifacts_dir)
    key = checkpoint_key(job_id, step)
    size = store.put_dir(key, folder)
    # The worker's eval_score is the checkpoint's held-out accuracy (`eval_accuracy`).
    writer.register_checkpoint(step, key, size, {"eval_accuracy": 0.4}, kept_steps=set())
    return writer


def test_list_checkpoints(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    writer = _job_with_checkpoint(client, alice, sessions, settings, tmp_path, 10)
    job_id = str(writer.job_id)
    writer.register_checkpoint(20, checkpoint_key(job_id, 20), 0, {"accuracy": 0.6}, kept_steps={10})
    data = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice.headers).json()["data"]
    assert [c["step"] for c in data] == [10, 20]
    assert data[0]["eval_score"] == 0.4 and data[0]["metrics"] == {"eval_accuracy": 0.4}
    assert data[0]["size_bytes"] == sum(len(v) for v in (HF_FILES | STATE_FILES).values())
    assert data[0]["download_url"] == f"/v1/jobs/{job_id}/checkpoints/10/download"


def test_download_streams_the_hf_folder_without_trainer_state(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = str(_job_with_checkpoint(client, alice, sessions, settings, tmp_path, 10).job_id)
    response = client.get(f"/v1/jobs/{job_id}/checkpoints/10/download", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == f'attachment; filename="{job_id}-step-000010.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
        archive.extractall(tmp_path / "out", filter="data")
    assert members == {f"step-000010/{rel}": data for rel, data in HF_FILES.items()}
    assert (tmp_path / "out/step-000010/model.safetensors").read_bytes() == HF_FILES["model.safetensors"]


def test_download_rejects_bad_steps(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = str(_job_with_checkpoint(client, alice, sessions, settings, tmp_path, 10).job_id)
    for step in ("..%2F..%2Fetc", "%2e%2e", "1.5", "10;ls", "abc"):
        response = client.get(f"/v1/jobs/{job_id}/checkpoints/{step}/download", headers=alice.headers)
        assert response.headers["content-type"] == "application/problem+json", step
        assert response.status_code in (404, 422), step
        if response.status_code == 422:
            assert response.json()["detail"].startswith("step: Input should be a valid integer")
    assert_problem(
        client.get(f"/v1/jobs/{job_id}/checkpoints/-1/download", headers=alice.headers),
        422,
        "step: Input should be greater than or equal to 0",
    )
    assert_problem(
        client.get(f"/v1/jobs/{job_id}/checkpoints/11/download", headers=alice.headers),
        404,
        f"checkpoint of job {job_id} at step 11 not found",
    )


def test_download_of_pruned_files_is_410(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    job_id = str(_job_with_checkpoint(client, alice, sessions, settings, tmp_path, 10).job_id)
    LocalArtifactStore(settings.artifacts_dir).delete(checkpoint_key(job_id, 10))
    assert_problem(
        client.get(f"/v1/jobs/{job_id}/checkpoints/10/download", headers=alice.headers),
        410,
        "the files of checkpoint step 10 are no longer stored",
    )
