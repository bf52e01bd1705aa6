"""Path traversal in checkpoint names: a checkpoint is addressed by its integer step only, so no
spelling of a name (encoded or raw dot segments, separators, NUL, other checkpoints' folder names)
reaches a file outside that checkpoint's published files. Every attempt is a 404/422 problem+json,
never a 500, leaks nothing and writes nothing; the real checkpoint still downloads.
"""

from __future__ import annotations

import gzip
import io
import socket
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from reliability_testing import Caller, files_under, row_counts
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service.artifacts import LocalArtifactStore, checkpoint_key
from service.settings import Settings

SECRET = b"TRAINER-STATE-SECRET-0b6f"
STEP = 1

HOSTILE_NAMES = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%252e%252e",  # double-encoded
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "..%5C..%5C..%5Cetc%5Cpasswd",
    "1%2F..%2F..%2Fsecret",
    "1%2Ftrainer_state%2Foptimizer.pt",
    "step-000001",
    "step-000001%2Ftrainer_state",
    ".tmp-step-000001-1",
    "1%00",
    "1%00..%2F..",
    "1;..",
    "%2Fetc%2Fpasswd",
    "~",
    "%C0%AE%C0%AE",  # overlong UTF-8 dots
    "%EF%BC%8E%EF%BC%8E",  # fullwidth dots
    "0x1",
    "1e0",
    "-1",
    "99999999999999999999",
]


@pytest.fixture
def checkpointed_job(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> uuid.UUID:
    """Alice's job with a registered checkpoint whose folder also holds trainer state (never served)."""
    created = client.post("/v1/jobs", json={"config": {"total_steps": 3}}, headers=alice.headers)
    assert created.status_code == 202, created.text
    job_id = uuid.UUID(created.json()["id"])
    folder = tmp_path / "checkpoint"
    (folder / "trainer_state").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "trainer_state" / "optimizer.pt").write_bytes(SECRET)
    store = LocalArtifactStore(settings.artifacts_dir)
    store.put_dir(checkpoint_key(job_id, STEP), folder)
    store.put_bytes(f"jobs/{job_id}/secret.txt", SECRET)  # beside the checkpoints, never published
    writer = claim_as_worker(sessions, job_id, worker_id="w")
    writer.register_checkpoint(STEP, checkpoint_key(job_id, STEP), 0, {}, kept_steps=set())
    return job_id


@pytest.fixture
def unchanged(db: Session, settings: Settings, checkpointed_job: uuid.UUID) -> Iterator[None]:
    assert checkpointed_job  # counted once the job, its checkpoint and its files exist
    before, files = row_counts(db), files_under(settings.artifacts_dir)
    yield
    assert row_counts(db) == before
    assert files_under(settings.artifacts_dir) == files


def _leaks(body: bytes) -> bool:
    for blob in (body, _gunzip(body)):
        if SECRET in blob or b"root:x:0:0" in blob:
            return True
    return False


def _gunzip(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except (OSError, EOFError):
        return b""


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_checkpoint_names_are_refused(
    client: TestClient, alice: Caller, checkpointed_job: uuid.UUID, name: str
) -> None:
    response = client.get(f"/v1/jobs/{checkpointed_job}/checkpoints/{name}/download", headers=alice.headers)
    assert response.status_code in (404, 422), (name, response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    assert not _leaks(response.content)


@pytest.mark.usefixtures("unchanged")
def test_the_real_checkpoint_still_downloads_without_its_trainer_state(
    client: TestClient, alice: Caller, checkpointed_job: uuid.UUID
) -> None:
    response = client.get(f"/v1/jobs/{checkpointed_job}/checkpoints/{STEP}/download", headers=alice.headers)
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        assert archive.getnames() == ["step-000001/config.json"]  # the published file and nothing else
    assert not _leaks(response.content)


RAW_PATHS = [
    "/v1/jobs/{job}/checkpoints/../../../../etc/passwd/download",
    "/v1/jobs/{job}/checkpoints/1/../../../../../etc/passwd",
    "/v1/jobs/{job}/checkpoints/1/download/../../../secret.txt",
    "/v1/jobs/{job}/checkpoints/./1/trainer_state/optimizer.pt",
    "/v1/jobs/{job}/checkpoints/1/trainer_state/../download",
    "/v1/jobs/{job}/checkpoints/..\\..\\secret.txt/download",
    "/v1/jobs/{job}/checkpoints//etc/passwd/download",
]


@pytest.fixture(scope="module")
def live_url(settings: Settings) -> Iterator[str]:
    from live_server import serve

    with serve(settings) as url:
        yield url


def _raw_get(url: str, path: str, authorization: str) -> tuple[int, bytes]:
    """Send `path` byte for byte (no client-side dot-segment normalisation); returns (status, reply)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply


@pytest.mark.usefixtures("unchanged")
def test_raw_dot_segments_on_a_real_server_reach_nothing(
    live_url: str, alice: Caller, checkpointed_job: uuid.UUID
) -> None:
    for template in RAW_PATHS:
        path = template.format(job=checkpointed_job)
        status, reply = _raw_get(live_url, path, alice.headers["Authorization"])
        assert status in (400, 404, 422), (path, reply[:300])
        assert b"application/problem+json" in reply or status == 400, (path, reply[:300])
        assert not _leaks(reply), path
