"""The webhook tasks of the worker in process, on Postgres and Redis: a committed event's delivery
task is sent at commit, and the sweeper sends again the deliveries that are due but whose task was
lost (here: deleted from the broker)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service import lifecycle
from service.models import Job, WebhookDelivery, WebhookEndpoint
from service.queue import MAINTENANCE_QUEUE


def _queued_deliveries(redis_url: str) -> list[str]:
    out = []
    for raw in redis.Redis.from_url(redis_url).lrange(MAINTENANCE_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "worker.deliver_webhook":
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            out.append(kwargs["delivery_id"])
    return out


def test_the_sweeper_resends_deliveries_whose_task_was_lost(
    sessions: sessionmaker[Session],
    make_job: Callable[..., Job],
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMIX_DATABASE_URL", database_url)
    monkeypatch.setenv("REMIX_BROKER_URL", redis_url)
    monkeypatch.setenv("REMIX_WEBHOOK_SWEEP_SECONDS", "0.001")
    from worker.tasks import sweep_webhooks  # installs the worker's delivery sender

    job = make_job()
    with sessions.begin() as session:
        session.add(
            WebhookEndpoint(
                tenant_id=job.tenant_id,
                url="https://example.com/h",
                secret="whsec_AAAA",
                event_types=["job.cancelled"],
                description="",
            )
        )
    redis.Redis.from_url(redis_url).delete(MAINTENANCE_QUEUE)
    with sessions() as session:
        outcome = lifecycle.request_cancel(session, session.get_one(Job, job.id), checkpoint=False)
    assert outcome is lifecycle.CancelOutcome.cancelled
    with sessions() as session:
        [delivery_id] = session.scalars(select(WebhookDelivery.id))
    assert _queued_deliveries(redis_url) == [str(delivery_id)]  # sent when the cancellation committed

    redis.Redis.from_url(redis_url).delete(MAINTENANCE_QUEUE)  # the message is lost
    assert sweep_webhooks.run() == 1
    assert _queued_deliveries(redis_url) == [str(delivery_id)]

    with sessions.begin() as session:  # a delivery that is done is not sent again
        session.get_one(WebhookDelivery, delivery_id).status = "succeeded"
    redis.Redis.from_url(redis_url).delete(MAINTENANCE_QUEUE)
    assert sweep_webhooks.run() == 0 and _queued_deliveries(redis_url) == []
