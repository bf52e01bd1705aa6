"""A full disk during a checkpoint write: the job fails with a clear reason and the previous checkpoint
stays intact (checkpoints are written to a temporary folder and renamed into place).

The disk is really full: the worker (`worker.job_runner.run_job`, the code a Celery task runs) runs in
a child process with its own mount namespace (`unshare --mount`, plus `--user --map-root-user` when
not root), where the artifact store is a small tmpfs. Once the step-2 checkpoint is complete, the
child fills the tmpfs with a ballast file so that only half a checkpoint fits; the step-4 save then
gets ENOSPC. The mount vanishes with the child; before exiting it copies the job folder out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from reliability_testing import REPO_ROOT
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Checkpoint, Job, JobAttempt, JobEvent, JobMetric, Tenant
from service.settings import Settings

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import hashlib, json, os, shutil, sys, threading, time
    from pathlib import Path
    from service.settings import Settings
    from worker.job_runner import run_job

    job_id, database_url, artifacts, out = sys.argv[1:5]
    job_dir = Path(artifacts) / "jobs" / job_id
    first = job_dir / "checkpoints" / "step-000002"
    report = {}

    def digest(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    def fill_disk():
        while not (first / "trainer_state" / "meta.json").exists():
            time.sleep(0.01)
        time.sleep(0.2)  # the rename is done once meta.json is visible; let the registration finish
        size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
        free = shutil.disk_usage(artifacts).free
        with open(Path(artifacts) / "ballast", "wb") as handle:
            handle.truncate(0)
            handle.write(b"\\0" * max(free - size // 2, 0))
        report.update(checkpoint_bytes=size, free_after_ballast=shutil.disk_usage(artifacts).free,
                      first_digest=digest(first))

    threading.Thread(target=fill_disk, daemon=True).start()
    settings = Settings(database_url=database_url, broker_url="memory://", artifacts_dir=artifacts,
                        heartbeat_seconds=1.0, stale_after_seconds=600.0)
    report["outcome"] = run_job(job_id, settings=settings)
    report["leftovers"] = sorted(p.name for p in (job_dir / "checkpoints").iterdir())
    report["final_digest"] = digest(first) if first.exists() else {}
    shutil.copytree(job_dir, Path(out) / "job")
    print("REPORT " + json.dumps(report), flush=True)
    """
)


def _namespace_prefix() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("util-linux 'unshare' is needed to give the worker a private, small filesystem")
    prefix = ["unshare", "--mount", "--propagation", "private"]
    return prefix if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", *prefix[1:]]


def _queued_job(db: Session) -> Job:
    config = {
        "model": {"name_or_path": "builtin:tiny-arith"},
        "data": {"train_path": "builtin:addition", "eval_size": 16},
        # Steps long enough (~0.5 s each on a CPU) that the ballast is in place well before step 4 saves.
        "rollout": {"prompts_per_step": 32, "group_size": 4, "max_new_tokens": 12},
        "algorithm": {"name": "remix-grpo", "reincarnation_step": 2, "minibatch_size": 128},
        "optim": {"lr": 1e-4},
        "total_steps": 6,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "log_completions": 0,
    }
    tenant = Tenant(name=f"disk-full-{uuid.uuid4().hex[:8]}")
    db.add(tenant)
    db.flush()
    job = Job(tenant_id=tenant.id, base_model="builtin:tiny-arith", config=config, total_steps=6)
    db.add(job)
    db.commit()
    return job


def test_disk_full_on_checkpoint_write_fails_the_job_and_keeps_the_previous_checkpoint(
    db: Session, settings: Settings, tmp_path: Path
) -> None:
    job = _queued_job(db)
    artifacts, out = tmp_path / "artifacts", tmp_path / "out"
    artifacts.mkdir()
    out.mkdir()
    script = (
        f'mount -t tmpfs -o size=48m tmpfs "{artifacts}" && exec "{sys.executable}" -c "$CHILD" '
        f'"{job.id}" "{settings.database_url}" "{artifacts}" "{out}"'
    )
    env = {**os.environ, "CHILD": CHILD, "PYTHONPATH": str(REPO_ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("REMIX_") or k == "REMIX_CACHE_DIR"}
    result = subprocess.run(
        [*_namespace_prefix(), "sh", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout[-4000:] + result.stderr[-8000:]
    assert result.returncode == 0, log
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, log
    report = json.loads(lines[-1].removeprefix("REPORT "))

    # The job failed, saying plainly why and what survived.
    assert report["outcome"] == "failed", log
    assert report["free_after_ballast"] < report["checkpoint_bytes"]  # the disk really was full
    db.expire_all()
    row = db.get_one(Job, job.id)
    assert row.status == "failed" and row.finished_at is not None
    assert row.error.startswith("CheckpointWriteError: could not write checkpoint step-000004"), row.error
    assert "No space left on device" in row.error and "the previous checkpoint step-000002 is intact" in row.error
    attempt = db.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).one()
    assert (attempt.outcome, attempt.error) == ("failed", row.error)
    last_event = db.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc())).first()
    assert last_event is not None and (last_event.kind, last_event.message) == ("failed", row.error)

    # The previous checkpoint is byte-for-byte what it was, complete, loadable and still registered.
    assert report["leftovers"] == ["step-000002"]  # no half-written step-000004, no .tmp- folder
    assert report["final_digest"] == report["first_digest"]
    assert "model.safetensors" in report["final_digest"] and "trainer_state/meta.json" in report["final_digest"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remix_engine.checkpoint import load_trainer_state

    saved = out / "job" / "checkpoints" / "step-000002"
    assert load_trainer_state(saved)["step"] == 2
    AutoModelForCausalLM.from_pretrained(saved)
    AutoTokenizer.from_pretrained(saved)
    assert db.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job.id)).all() == [2]
    steps = sorted(db.scalars(select(JobMetric.step).where(JobMetric.job_id == job.id)))
    assert steps == list(range(1, len(steps) + 1)) and 3 <= len(steps) <= 4
