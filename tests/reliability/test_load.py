"""Bounded load on loopback against a real uvicorn process and Postgres: 200 concurrent submissions
(one job per Idempotency-Key, none lost, each dispatched once) and 50 SSE followers of a running
job (every step exactly once, in order, then `end`)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from reliability_testing import Caller, make_caller
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from testing_support import claim_as_worker, start_api

from service.db import session_factory
from service.models import Job, JobMetric, JobStatus
from service.settings import Settings

pytestmark = pytest.mark.slow

SUBMISSIONS = 200
FOLLOWERS = 50
STEPS = 12


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A slower SSE poll than the unit tests: 50 followers polling every 50 ms would only measure the CPU.
    load_settings = settings.model_copy(update={"sse_poll_seconds": 0.2})
    api, url = start_api(load_settings, tmp_path_factory.mktemp("api") / "api.log")
    yield url
    api.stop()


def _queued_job_ids(redis_client: redis.Redis, queue: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    for raw in redis_client.lrange(queue, 0, -1):
        _args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids[kwargs["job_id"]] += 1
    return ids


async def _submit(http: httpx.AsyncClient, body: dict[str, Any], key: str) -> dict[str, Any]:
    """POST like a well-behaved client: a 503 (pool or queue busy) is retried with the same key."""
    for _attempt in range(20):
        response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        if response.status_code != 503:
            assert response.status_code == 202, response.text
            return {
                "id": response.json()["id"],
                "replayed": response.headers.get("idempotent-replayed") == "true",
            }
        assert response.headers["content-type"] == "application/problem+json"
        await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 5)
    raise AssertionError(f"submission with key {key} kept failing with 503")


async def _submit_all(url: str, caller: Caller, keys: list[str]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=SUBMISSIONS, max_keepalive_connections=SUBMISSIONS)
    async with httpx.AsyncClient(base_url=url, headers=caller.headers, timeout=120, limits=limits) as http:
        body = {"name": "load", "config": {"total_steps": 3}}
        return list(await asyncio.gather(*(_submit(http, body, key) for key in keys)))


def _jobs_of(db: Session, caller: Caller) -> list[Job]:
    db.rollback()
    return list(db.scalars(select(Job).where(Job.tenant_id == caller.tenant_id)))


@pytest.mark.parametrize(
    "distinct_keys",
    [
        pytest.param(1, id="all-one-key"),
        pytest.param(40, id="40-keys-x5"),
        pytest.param(SUBMISSIONS, id="all-distinct"),
    ],
)
def test_concurrent_submissions_make_exactly_one_job_per_key(
    api_url: str,
    database_url: str,
    db: Session,
    settings: Settings,
    redis_client: redis.Redis,
    distinct_keys: int,
) -> None:
    caller = make_caller(database_url)
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}-{i % distinct_keys}" for i in range(SUBMISSIONS)]

    results = asyncio.run(_submit_all(api_url, caller, keys))

    jobs = _jobs_of(db, caller)
    assert len(jobs) == distinct_keys  # exactly one job per key, none lost
    by_key = {job.idempotency_key: str(job.id) for job in jobs}
    assert set(by_key) == set(keys)
    for key, result in zip(keys, results, strict=True):
        assert result["id"] == by_key[key]  # every response names the stored job of its key
    assert sum(r["replayed"] for r in results) >= SUBMISSIONS - distinct_keys
    # Each stored job was dispatched exactly once, however many requests raced for it.
    queued = _queued_job_ids(redis_client, settings.task_queue)
    assert all(queued[job_id] == 1 for job_id in by_key.values()), queued
    assert all(job.status == JobStatus.queued.value and job.celery_task_id for job in jobs)


class _Follower:
    """One SSE client: collects the metric steps, lifecycle events and the end event it receives."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.kinds: list[str] = []
        self.end: dict[str, Any] | None = None
        self.error: str | None = None

    async def follow(self, http: httpx.AsyncClient, job_id: str, ready: asyncio.Event, counter: list[int]) -> None:
        try:
            async with http.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
                assert response.status_code == 200, await response.aread()
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        self._record(event, json.loads(line.removeprefix("data: ")), ready, counter)
                        if event == "end":
                            return
        except Exception as error:  # reported by the test with the follower's state
            self.error = f"{type(error).__name__}: {error}"

    def _record(self, event: str, data: dict[str, Any], ready: asyncio.Event, counter: list[int]) -> None:
        if event == "metric":
            self.steps.append(data["step"])
        elif event == "end":
            self.end = data
        else:
            self.kinds.append(event)
            if event == "queued" and not self.steps:
                counter[0] += 1
                if counter[0] == FOLLOWERS:
                    ready.set()


def _feed_job(database_url: str, job_id: uuid.UUID, start: threading.Event) -> None:
    """Write a job's progress through service.lifecycle, as a worker does, step by step."""
    start.wait(timeout=120)
    writer = claim_as_worker(session_factory(database_url), job_id, worker_id="load-feeder")  # 'started'
    for step in range(1, STEPS + 1):
        writer.record_step(step, {"loss": 1.0 / step, "accuracy": step / STEPS})
        if step % 4 == 0:
            writer.add_event("checkpoint", step, "saved", {})
        time.sleep(0.1)
    writer.finish(JobStatus.succeeded, step=STEPS, summary={"final_step": STEPS}, message="done")


async def _follow_all(url: str, caller: Caller, job_id: str, start: threading.Event) -> list[_Follower]:
    limits = httpx.Limits(max_connections=FOLLOWERS + 5)
    timeout = httpx.Timeout(120, connect=30)
    async with httpx.AsyncClient(base_url=url, headers=caller.headers, timeout=timeout, limits=limits) as http:
        followers = [_Follower() for _ in range(FOLLOWERS)]
        ready, counter = asyncio.Event(), [0]
        tasks = [asyncio.create_task(f.follow(http, job_id, ready, counter)) for f in followers]
        # The job starts only once every client is connected and has seen the queued event.
        await asyncio.wait_for(ready.wait(), timeout=120)
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        return followers


def test_fifty_sse_followers_each_get_every_step_once_and_the_end(api_url: str, database_url: str, db: Session) -> None:
    caller = make_caller(database_url)
    created = httpx.post(f"{api_url}/v1/jobs", json={"config": {"total_steps": STEPS}}, headers=caller.headers)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    start = threading.Event()
    feeder = threading.Thread(target=_feed_job, args=(database_url, uuid.UUID(job_id), start), daemon=True)
    feeder.start()
    try:
        followers = asyncio.run(_follow_all(api_url, caller, job_id, start))
    finally:
        start.set()
        feeder.join(timeout=120)
    assert not feeder.is_alive()
    for index, follower in enumerate(followers):
        assert follower.error is None, (index, follower.error)
        assert follower.steps == list(range(1, STEPS + 1)), (index, follower.steps)
        assert follower.kinds == [
            "queued",
            "started",
            "checkpoint",
            "checkpoint",
            "checkpoint",
            "succeeded",
        ], (
            index,
            follower.kinds,
        )
        assert follower.end == {"job_id": job_id, "status": "succeeded"}
    db.rollback()
    metric_rows = db.scalar(select(func.count()).select_from(JobMetric).where(JobMetric.job_id == uuid.UUID(job_id)))
    assert metric_rows == STEPS


def test_the_load_api_is_still_healthy(api_url: str) -> None:
    assert httpx.get(f"{api_url}/readyz", timeout=10).status_code == 200
