"""Recording webhook events inside the transaction of the state change they report.

`record_event` inserts the event (once per dedupe key: a transition that runs again finds it recorded)
and one pending delivery per endpoint of the tenant subscribed to its type. The ids of the new
deliveries wait in the session until its transaction commits; then they are handed to the session's
delivery sender (`use_delivery_sender`: the API's request sessions carry one for the app's broker) or
else to the process's (`set_delivery_sender`: the worker installs one), which sends
`worker.deliver_webhook` for each. A rolled-back transaction sends nothing, and a sender that fails
leaves the deliveries to the maintenance worker's sweeper, so an event is never lost between the
commit and the send.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.models import Checkpoint, Job, JobStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from service.schemas import CheckpointPublic, JobPublic
from service.webhooks import WebhookEventType

log = logging.getLogger(__name__)

DeliverySender = Callable[[list[uuid.UUID]], None]

_STATUS_EVENTS = {
    JobStatus.succeeded.value: WebhookEventType.job_succeeded,
    JobStatus.failed.value: WebhookEventType.job_failed,
    JobStatus.cancelled.value: WebhookEventType.job_cancelled,
}
_TO_SEND = "webhook_deliveries_to_send"
_SESSION_SENDER = "webhook_delivery_sender"
_sender: DeliverySender | None = None


def set_delivery_sender(sender: DeliverySender | None) -> None:
    """Install the function that sends the delivery tasks of committed events (one per process)."""
    global _sender
    _sender = sender


def use_delivery_sender(session: Session, sender: DeliverySender) -> None:
    """Send the deliveries that this session's transactions commit with `sender` (not the process's)."""
    session.info[_SESSION_SENDER] = sender


def record_event(
    session: Session, tenant_id: uuid.UUID, event_type: WebhookEventType, data: dict[str, Any], dedupe_key: str
) -> list[uuid.UUID]:
    """Record the event and its deliveries (no commit); returns the new deliveries' ids.

    Nothing is recorded when no endpoint of the tenant subscribes to the type, or when an event with
    this dedupe key was recorded before."""
    endpoints = [
        endpoint
        for endpoint in session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id))
        if event_type.value in endpoint.event_types
    ]
    if not endpoints:
        return []
    now = utcnow()
    payload = {"type": event_type.value, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    values = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "type": event_type.value,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "created_at": now,
    }
    event_id = session.execute(
        _insert(session)(WebhookEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["tenant_id", "dedupe_key"])
        .returning(WebhookEvent.id)
    ).scalar_one_or_none()
    if event_id is None:
        return []
    deliveries = [
        WebhookDelivery(
            id=uuid.uuid4(),
            event_id=event_id,
            webhook_id=endpoint.id,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    session.flush()
    ids = [delivery.id for delivery in deliveries]
    session.info.setdefault(_TO_SEND, []).extend(ids)
    return ids


def record_job_event(
    session: Session, job_id: uuid.UUID, event_type: WebhookEventType, dedupe_key: str | None = None
) -> list[uuid.UUID]:
    """Record `event_type` for the job as it is now in this transaction (data: the job object).

    The default dedupe key fits events that happen once per job; one that can recur (a pause)
    passes a key of its own occurrence."""
    job = session.get_one(Job, job_id, populate_existing=True)
    data = JobPublic.model_validate(job).model_dump(mode="json")
    return record_event(session, job.tenant_id, event_type, data, dedupe_key or f"{event_type.value}:{job.id}")


def record_job_status_event(session: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    """The event of the status the job has just reached (succeeded, failed, cancelled), if any."""
    status = session.scalar(select(Job.status).where(Job.id == job_id).execution_options(populate_existing=True))
    event_type = _STATUS_EVENTS.get(status or "")
    return [] if event_type is None else record_job_event(session, job_id, event_type)


def record_checkpoint_event(session: Session, job_id: uuid.UUID, step: int) -> list[uuid.UUID]:
    """`checkpoint.created` for the job's checkpoint of `step` (data: the checkpoint object)."""
    checkpoint = session.scalar(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.step == step)
        .execution_options(populate_existing=True)
    )
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    if checkpoint is None or tenant_id is None:
        return []
    data = CheckpointPublic.model_validate(checkpoint).model_dump(mode="json")
    data["download_url"] = f"/v1/jobs/{job_id}/checkpoints/{step}/download"
    key = f"{WebhookEventType.checkpoint_created.value}:{job_id}:{step}"
    return record_event(session, tenant_id, WebhookEventType.checkpoint_created, data, key)


def _insert(session: Session) -> Any:
    """The dialect's own INSERT (Postgres or SQLite), which has ON CONFLICT DO NOTHING."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"webhook events are not implemented for the {dialect} dialect")


@event.listens_for(Session, "after_commit")
def _send_committed_deliveries(session: Session) -> None:
    ids = session.info.pop(_TO_SEND, None)
    sender = session.info.get(_SESSION_SENDER, _sender)
    if not ids or sender is None:
        return
    try:
        sender(list(ids))
    except Exception:  # the broker may be down: the sweeper sends due deliveries later
        log.warning("could not send %d webhook delivery task(s); the sweeper will", len(ids), exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_deliveries(session: Session) -> None:
    session.info.pop(_TO_SEND, None)
