"""Real processes end to end: a uvicorn API and Celery workers on Postgres + Redis train the tiny model.

Covers submission over HTTP through to a downloadable checkpoint, recovery of a job whose worker
was killed with SIGKILL (reaped, resumed from its last checkpoint, one metric row per step),
cancellation between steps, and the beat-driven reaper of a maintenance worker.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select, update
from worker_testing import (
    ManagedProcess,
    queued_train_jobs,
    running_api,
    service_env,
    tiny_job_config,
    wait_for,
)

from service.lifecycle import claim_job
from service.models import ApiKey, Checkpoint, Dataset, Job, JobAttempt, JobEvent, JobMetric, Tenant, utcnow
from service.repositories.tenants import create_api_key, get_or_create_tenant
from service.settings import Settings
from worker.celery_app import create_celery_app
from worker.commands import celery_worker_argv

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 600  # first use builds the tiny model (~90 s) into the shared cache


@pytest.fixture(scope="module")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One artifact store for the module: the API and the workers must see the same files."""
    return Settings(
        database_url=database_url,
        broker_url=redis_url,
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        heartbeat_seconds=0.5,
        stale_after_seconds=3.0,
        max_attempts=3,
    )


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real API of the module, on its settings."""
    with running_api(settings, tmp_path_factory.mktemp("api") / "api.log") as url:
        yield url


@pytest.fixture
def client(api_url: str, sessions) -> Iterator[httpx.Client]:
    with sessions() as session:  # the repository functions commit
        _row, key = create_api_key(session, get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}"))
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield http


def _submit(client: httpx.Client, config: dict) -> str:
    response = client.post("/v1/jobs", json={"name": "worker-test", "config": config})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _job(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get_one(Job, uuid.UUID(str(job_id)))


def _wait_status(sessions, job_id, statuses: set[str], worker: ManagedProcess, timeout: float = JOB_TIMEOUT) -> Job:
    def reached() -> Job | None:
        job = _job(sessions, job_id)
        return job if job.status in statuses else None

    return wait_for(reached, timeout=timeout, what=f"job {job_id} to become {statuses}", on_timeout=worker.log_text)


def _metric_steps(sessions, job_id) -> list[int]:
    with sessions() as session:
        steps = session.scalars(select(JobMetric.step).where(JobMetric.job_id == uuid.UUID(str(job_id))))
        return sorted(steps)


def _event_kinds(sessions, job_id) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(JobEvent.kind).where(JobEvent.job_id == uuid.UUID(str(job_id))).order_by(JobEvent.id)
            )
        )


def test_job_submitted_over_http_is_trained_and_its_checkpoint_loads(client, sessions, start_worker, tmp_path):
    # given a running worker and a job submitted over HTTP
    worker = start_worker("e2e")
    job_id = _submit(client, tiny_job_config())

    # when the worker has trained it
    _wait_status(sessions, job_id, {"succeeded", "failed"}, worker)
    job = client.get(f"/v1/jobs/{job_id}").json()

    # then status, summary, metrics, events and checkpoints come back over REST
    assert job["status"] == "succeeded", job["error"]
    assert (job["current_step"], job["attempts"]) == (4, 1)
    assert 0.0 <= job["summary"]["accuracy_before"] <= 1.0
    assert 0.0 <= job["summary"]["accuracy_after"] <= 1.0
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all("reward_mean" in m["metrics"] for m in metrics)
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]]
    for kind in ("started", "evaluation", "checkpoint", "reincarnated", "succeeded"):
        assert kind in kinds
    assert kinds[-1] == "succeeded"
    checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step"] for c in checkpoints] == [2, 4]

    # and the final checkpoint downloads as an archive that transformers loads
    archive = client.get(checkpoints[-1]["download_url"])
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "step-000004")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "step-000004")
    ids = tokenizer("12+34=", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[:2] == ids.shape


def test_killed_worker_is_reaped_and_the_job_resumes_from_its_checkpoint(sessions, settings, start_worker):
    # given a job being trained by a worker
    total, every = 8, 4
    job_id = _submit_direct(sessions, settings, tiny_job_config(total_steps=total, checkpoint_every=every))
    first = start_worker("doomed")

    # when the worker dies with SIGKILL after a checkpoint and a step past it, before the end
    def checkpointed_mid_job() -> bool:
        job = _job(sessions, job_id)
        with sessions() as session:
            has_checkpoint = session.scalar(select(Checkpoint.id).where(Checkpoint.job_id == job.id).limit(1))
        return bool(has_checkpoint) and job.current_step > every and job.status == "running"

    wait_for(
        checkpointed_mid_job,
        timeout=JOB_TIMEOUT,
        what="a checkpoint mid-job",
        interval=0.05,
        on_timeout=first.log_text,
    )
    first.kill()
    killed_at = _job(sessions, job_id).current_step
    assert killed_at < total, "the job finished before the worker could be killed"

    # and, once its heartbeat is stale, a new worker starts
    wait_for(
        lambda: _job(sessions, job_id).heartbeat_at < utcnow() - timedelta(seconds=settings.stale_after_seconds),
        timeout=30,
        what="the heartbeat to go stale",
    )
    second = start_worker("successor")

    # then the start-up reaper re-queues it and the new worker resumes and finishes it
    job = _wait_status(sessions, job_id, {"succeeded", "failed"}, second)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert _metric_steps(sessions, job_id) == list(range(1, total + 1))
    with sessions() as session:
        attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.attempt))
        attempts = list(attempts)
        early_metrics = session.scalars(
            select(JobMetric).where(JobMetric.job_id == job.id, JobMetric.step <= attempts[1].resumed_from_step)
        ).all()
    assert [a.outcome for a in attempts] == ["stalled", "succeeded"]
    assert attempts[1].resumed_from_step == every < killed_at  # steps past the checkpoint were trained twice
    # steps up to the checkpoint were not trained again: their rows predate the second attempt
    assert early_metrics and all(m.created_at < attempts[1].started_at for m in early_metrics)
    kinds = _event_kinds(sessions, job_id)
    assert kinds.count("started") == 2
    for kind in ("stalled", "requeued", "resumed"):
        assert kind in kinds
    assert kinds[-1] == "succeeded"
    # the steps trained twice still have one samples event each (an SSE follower sees each once)
    with sessions() as session:
        samples = select(JobEvent.step).where(JobEvent.job_id == job.id, JobEvent.kind == "samples")
        assert sorted(session.scalars(samples)) == list(range(1, total + 1))


def _submit_direct(sessions, settings: Settings, config: dict) -> str:
    """Insert a queued job and send its task, as the API does (keeps this test independent of HTTP)."""
    with sessions() as session:  # get_or_create_tenant commits
        tenant = get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}")
        job = Job(
            tenant_id=tenant.id,
            base_model=config["model"]["name_or_path"],
            config=config,
            total_steps=config["total_steps"],
        )
        session.add(job)
        session.commit()
    create_celery_app(settings).send_task("worker.train_job", kwargs={"job_id": str(job.id)}, queue=settings.task_queue)
    return str(job.id)


def test_cancelling_a_running_job_stops_it_between_steps(client, sessions, start_worker):
    worker = start_worker("cancel")
    job_id = _submit(client, tiny_job_config(total_steps=200, checkpoint_every=100))
    wait_for(
        lambda: _job(sessions, job_id).current_step >= 2,
        timeout=JOB_TIMEOUT,
        what="two trained steps",
        on_timeout=worker.log_text,
    )

    response = client.post(f"/v1/jobs/{job_id}/cancel", params={"checkpoint": "true"})
    assert response.status_code == 202, response.text

    job = _wait_status(sessions, job_id, {"cancelled", "failed"}, worker, timeout=120)
    assert job.status == "cancelled", job.error
    assert 2 <= job.current_step < 200
    assert _metric_steps(sessions, job_id) == list(range(1, job.current_step + 1))
    checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step"] for c in checkpoints] == [job.current_step]  # saved on request before stopping
    kinds = _event_kinds(sessions, job_id)
    assert kinds.index("cancel_requested") < kinds.index("cancelled")
    assert kinds[-1] == "cancelled"
    with sessions() as session:
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)).one()
    assert attempt.outcome == "cancelled"


def test_beat_reaps_jobs_orphaned_after_the_worker_started(sessions, settings, tmp_path, redis_url):
    # given a maintenance-only worker with embedded beat, as deployed (solo pool, no training queue)
    redis.Redis.from_url(redis_url).delete(settings.task_queue)
    log = tmp_path / "maintenance.log"
    maintenance = ManagedProcess(
        celery_worker_argv(
            ["maintenance"], "maint@%h", concurrency=None, pool="solo", beat_schedule=tmp_path / "beat-schedule"
        ),
        service_env(settings),
        log,
    )
    try:
        wait_for(
            lambda: "ready." in maintenance.log_text(),
            timeout=60,
            what="the maintenance worker",
            on_timeout=maintenance.log_text,
        )
        # when a job's worker dies after the start-up reaper already ran
        with sessions() as session:  # get_or_create_tenant commits
            tenant = get_or_create_tenant(session, "orphans")
            job = Job(tenant_id=tenant.id, base_model="builtin:tiny-arith", config=tiny_job_config(), total_steps=4)
            session.add(job)
            session.commit()
        claim_job(sessions, job.id, worker_id="vanished-host-1")
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))

        # then the periodic reaper re-queues it onto the training queue
        _wait_status(sessions, job.id, {"queued"}, maintenance, timeout=60)
        wait_for(
            lambda: queued_train_jobs(redis_url, settings.task_queue) == [str(job.id)],
            timeout=30,
            what="the re-sent train_job message",
        )
    finally:
        maintenance.stop()


# A tenant's reward that tries every way out of its sandbox it can think of, from inside a real job on
# a real worker. It scores 0.5 when everything was refused and 1.0 when anything got through; it cannot
# report more (its only channel out is its score), which is the point.
ESCAPE_REWARD = """
def reward(completion, answer):
    import os, socket
    leaked = []
    for pid in os.listdir('/proc'):
        try:
            environ = open('/proc/' + pid + '/environ', 'rb').read()
        except OSError:
            continue
        if b'REMIX_' in environ or b'postgresql' in environ:
            leaked.append('environ of ' + pid)
    for folder in (ARTIFACTS, '/var/lib/postgresql', '/etc', '/root', '/home', '/work'):
        for root, dirs, files in os.walk(folder):
            for name in files:
                try:
                    if SECRET in open(os.path.join(root, name), 'rb').read(1 << 20):
                        leaked.append(name)
                except OSError:
                    pass
    try:
        open(ARTIFACTS + '/planted-by-the-sandbox', 'w').write('x')
        leaked.append('wrote to the artifact store')
    except OSError:
        pass
    for port in (5432, 6379, 5672):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            leaked.append(port)
        except OSError:
            pass
    try:
        import subprocess
        subprocess.run(['psql', '-h', '127.0.0.1', '-U', 'postgres', '-c', "UPDATE jobs SET name = 'pwned'"])
        leaked.append('psql')
    except Exception:
        pass
    try:
        if os.fork() == 0:
            os.setsid()
            os._exit(0)
        leaked.append('fork')
    except Exception:
        pass
    return 1.0 if leaked else 0.5
"""


def _database_rows(sessions) -> dict[str, object]:
    """Everything an escape into the database could change, as plain values."""
    with sessions() as session:
        jobs = {str(j.id): (j.name, j.config, j.tenant_id) for j in session.scalars(select(Job))}
        return {
            "jobs": jobs,
            "tenants": sorted((str(t.id), t.name) for t in session.scalars(select(Tenant))),
            "api_keys": sorted((str(k.id), k.key_hash, k.revoked_at) for k in session.scalars(select(ApiKey))),
            "datasets": sorted((str(d.id), d.uri, d.size_bytes) for d in session.scalars(select(Dataset))),
        }


def test_a_reward_trying_to_escape_its_sandbox_on_a_real_worker_reads_and_changes_nothing(
    client, api_url, sessions, settings, start_worker
):
    # given another tenant's dataset holding a secret, in the artifact store the worker uses
    secret = f"victim-secret-{uuid.uuid4().hex}"
    with sessions() as session:
        _row, victim_key = create_api_key(session, get_or_create_tenant(session, f"victim-{uuid.uuid4().hex[:8]}"))
    rows = "".join(f'{{"prompt": "{secret} {i}", "answer": "{i}"}}\n' for i in range(4))
    upload = httpx.post(
        f"{api_url}/v1/datasets",
        files={"file": ("victim.jsonl", rows.encode())},
        headers={"Authorization": f"Bearer {victim_key}"},
        timeout=30,
    )
    assert upload.status_code == 201, upload.text
    artifacts = Path(settings.artifacts_dir)
    files_before = {p: p.read_bytes() for p in artifacts.rglob("*") if p.is_file()}
    assert any(secret.encode() in data for data in files_before.values())

    # and an attacker's job whose reward tries every escape
    code = ESCAPE_REWARD.replace("ARTIFACTS", repr(str(artifacts))).replace("SECRET", repr(secret.encode()))
    config = tiny_job_config(
        rollout={"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8},
        data={"train_path": "builtin:addition", "eval_size": 2},
        reward={"functions": [{"name": "python", "kwargs": {"code": code, "timeout_s": 5}}]},
        total_steps=1,
        checkpoint_every=1,
    )
    job_id = _submit(client, config)
    rows_before = _database_rows(sessions)

    # when a real worker trains it
    worker = start_worker("escape")
    job = _wait_status(sessions, job_id, {"succeeded", "failed"}, worker)

    # then the job ran its reward on every sample, and every attempt was refused (score 0.5, no error)
    assert job.status == "succeeded", job.error
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
    assert metrics[0]["metrics"]["reward_errors"] == 0
    assert metrics[0]["metrics"]["reward_mean"] == pytest.approx(0.5)
    # and the database rows, the other tenant's files and the artifact store are as they were
    rows_after = _database_rows(sessions)
    assert rows_after["tenants"] == rows_before["tenants"] and rows_after["api_keys"] == rows_before["api_keys"]
    assert rows_after["datasets"] == rows_before["datasets"]
    assert {k: v[:2] for k, v in rows_after["jobs"].items()} == {k: v[:2] for k, v in rows_before["jobs"].items()}
    for path, data in files_before.items():
        assert path.read_bytes() == data, path
    assert not list(artifacts.rglob("planted-by-the-sandbox"))
    assert "reward sandbox: bwrap: pid/net/mount" in worker.log_text()
