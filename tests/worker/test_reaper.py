"""The stale-job reaper against real Postgres, enqueueing onto a real Redis broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, update
from worker_testing import queued_train_jobs

from service.lifecycle import JobWriter, claim_job
from service.models import Job, JobAttempt, JobEvent, utcnow
from worker.celery_app import create_celery_app
from worker.reaper import reap_stale_jobs

TRAIN_TASK = "worker.train_job"


@pytest.fixture
def enqueue(settings, redis_url):
    redis.Redis.from_url(redis_url).delete(settings.task_queue)
    app = create_celery_app(settings)

    def send(job_id: str) -> str:
        return str(app.send_task(TRAIN_TASK, kwargs={"job_id": job_id}, queue=settings.task_queue).id)

    return send


def _make_stale(sessions, job_id, seconds: float = 60) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def _events(sessions, job_id) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def _job(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def test_stale_running_job_is_requeued_and_sent_to_the_broker(sessions, make_job, settings, enqueue, redis_url):
    # given a job whose worker stopped heart-beating, and a healthy one
    stale = make_job()
    healthy = make_job()
    claim_job(sessions, stale.id, worker_id="dead-host-1")
    claim_job(sessions, healthy.id, worker_id="live-host-2")
    _make_stale(sessions, stale.id)

    # when the reaper runs
    counts = reap_stale_jobs(sessions, settings, enqueue)

    # then only the stale one is queued again, recorded, and its task is in Redis
    assert counts == {"queued": 1}
    row = _job(sessions, stale.id)
    assert (row.status, row.attempts, row.worker_id) == ("queued", 1, None)
    assert row.celery_task_id is not None
    assert _events(sessions, stale.id) == ["started", "stalled", "requeued"]
    assert queued_train_jobs(redis_url, settings.task_queue) == [str(stale.id)]
    with sessions() as session:
        attempt = session.scalars(select(JobAttempt).where(JobAttempt.job_id == stale.id)).one()
    assert attempt.outcome == "stalled" and "dead-host-1" in attempt.error and attempt.ended_at is not None
    assert _job(sessions, healthy.id).status == "running"

    # and running it again right away finds nothing more to do
    assert reap_stale_jobs(sessions, settings, enqueue) == {}


def test_job_is_failed_after_max_attempts_with_every_attempt_recorded(sessions, make_job, settings, enqueue):
    job = make_job()

    for attempt in range(1, settings.max_attempts + 1):
        claim = claim_job(sessions, job.id, worker_id=f"host-{attempt}")
        assert claim is not None and claim.attempt == attempt
        _make_stale(sessions, job.id)
        reap_stale_jobs(sessions, settings, enqueue)

    row = _job(sessions, job.id)
    assert row.status == "failed"
    assert row.error.startswith(f"gave up after {settings.max_attempts} attempts")
    assert row.finished_at is not None
    with sessions() as session:
        attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.attempt))
        recorded = [(a.attempt, a.worker_id, a.outcome) for a in attempts]
    assert recorded == [(n, f"host-{n}", "stalled") for n in range(1, settings.max_attempts + 1)]
    assert _events(sessions, job.id)[-2:] == ["stalled", "failed"]
    assert _events(sessions, job.id).count("requeued") == settings.max_attempts - 1
    assert claim_job(sessions, job.id, worker_id="late-host") is None


def test_stale_job_being_cancelled_becomes_cancelled(sessions, make_job, settings, enqueue, redis_url):
    job = make_job()
    claim_job(sessions, job.id, worker_id="dead-host")
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="cancelling", cancel_requested=True))
    _make_stale(sessions, job.id)

    assert reap_stale_jobs(sessions, settings, enqueue) == {"cancelled": 1}

    row = _job(sessions, job.id)
    assert row.status == "cancelled" and row.finished_at is not None
    assert _events(sessions, job.id)[-2:] == ["stalled", "cancelled"]
    assert queued_train_jobs(redis_url, settings.task_queue) == []


def test_fresh_heartbeat_just_inside_the_limit_is_not_reaped(sessions, make_job, settings, enqueue):
    job = make_job()
    claim_job(sessions, job.id, worker_id="slow-host")
    _make_stale(sessions, job.id, seconds=settings.stale_after_seconds - 2)

    assert reap_stale_jobs(sessions, settings, enqueue) == {}
    assert _job(sessions, job.id).status == "running"


def test_unreachable_broker_leaves_the_job_for_the_next_run(sessions, make_job, settings):
    # given a broker nobody listens on
    dead_broker = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    app = create_celery_app(dead_broker)
    app.conf.broker_connection_timeout = 1
    app.conf.broker_connection_max_retries = 0
    app.conf.task_publish_retry = False

    def send(job_id: str) -> str:
        return str(app.send_task(TRAIN_TASK, kwargs={"job_id": job_id}, queue=settings.task_queue).id)

    job = make_job()
    claim_job(sessions, job.id, worker_id="dead-host")
    _make_stale(sessions, job.id)

    # when the reaper cannot send the task
    reap_stale_jobs(sessions, settings, send)

    # then the job is not stranded as queued-without-a-message: it stays stale-running
    row = _job(sessions, job.id)
    assert (row.status, row.heartbeat_at) == ("running", None)


def test_a_pausing_job_whose_worker_died_is_paused_and_not_sent_again(sessions, make_job, settings, enqueue, redis_url):
    # given a job asked to pause whose worker died before it stopped
    job = make_job()
    claim_job(sessions, job.id, worker_id="dead-host-1")
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="pausing"))
    _make_stale(sessions, job.id)

    # when the reaper runs
    counts = reap_stale_jobs(sessions, settings, enqueue)

    # then it is paused (a resume continues from its newest checkpoint), with no task in the broker
    assert counts == {"paused": 1}
    row = _job(sessions, job.id)
    assert (row.status, row.worker_id, row.heartbeat_at, row.celery_task_id) == ("paused", None, None, None)
    assert _events(sessions, job.id) == ["started", "stalled", "paused"]
    assert queued_train_jobs(redis_url, settings.task_queue) == []
    assert reap_stale_jobs(sessions, settings, enqueue) == {}  # a paused job is no longer watched


def test_attempts_that_ended_in_a_pause_do_not_count_towards_max_attempts(sessions, make_job, settings, enqueue):
    # given a job paused by its tenant as many times as it may be attempted
    job = make_job()
    for attempt in range(1, settings.max_attempts + 1):
        claim = claim_job(sessions, job.id, worker_id=f"host-{attempt}")
        assert claim is not None and claim.attempt == attempt
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job.id).values(status="pausing"))
        assert JobWriter(sessions, job.id, attempt).pause(step=0, message="paused") is True
        with sessions.begin() as session:  # resumed
            session.execute(update(Job).where(Job.id == job.id).values(status="queued"))

    # when the next attempt's worker dies
    claim_job(sessions, job.id, worker_id="dead-host")
    _make_stale(sessions, job.id)

    # then it is re-queued, not failed: only crashed attempts use up the budget
    assert reap_stale_jobs(sessions, settings, enqueue) == {"queued": 1}
    assert _events(sessions, job.id)[-1] == "requeued"
