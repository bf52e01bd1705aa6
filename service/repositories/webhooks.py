"""Webhook endpoints of a tenant (register, list, read, delete, rotate the secret) and their
delivery logs (list, read, queue again for redelivery). Every write commits.

Events and deliveries are created by service/webhooks/events.py inside the lifecycle transaction
that reports them, and attempts are recorded by service/webhooks/delivery.py on the worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.lifecycle.plumbing import rowcount
from service.models import WebhookDelivery, WebhookEndpoint, utcnow
from service.pagination import older_than
from service.webhooks.signing import new_secret


def create_endpoint(
    session: Session, tenant_id: uuid.UUID, *, url: str, event_types: Sequence[str], description: str
) -> WebhookEndpoint:
    """A new endpoint with a fresh signing secret (commits)."""
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url,
        event_types=list(dict.fromkeys(event_types)),  # in the order given, each once
        description=description,
        secret=new_secret(),
    )
    session.add(endpoint)
    session.commit()
    return endpoint


def list_endpoints(session: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    """The tenant's endpoints, oldest first."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def get_endpoint(session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> WebhookEndpoint | None:
    """The tenant's endpoint, or None (another tenant's is indistinguishable from a missing one)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id, WebhookEndpoint.tenant_id == tenant_id)
    return session.scalar(query)


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its delivery log; pending deliveries to it are dropped (commits)."""
    session.delete(endpoint)
    session.commit()


def rotate_secret(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Replace the signing secret; every attempt from now on is signed with the new one (commits)."""
    endpoint.secret = new_secret()
    endpoint.secret_rotated_at = utcnow()
    session.commit()
    return endpoint


def list_deliveries(
    session: Session, webhook_id: uuid.UUID, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> tuple[list[WebhookDelivery], bool]:
    """The endpoint's deliveries, newest first; returns (page, has_more)."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if after is not None:
        query = query.where(older_than(WebhookDelivery.created_at, WebhookDelivery.id, after))
    order = (WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_delivery(session: Session, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
    return session.scalar(query)


def queue_redelivery(session: Session, delivery: WebhookDelivery, attempts_per_series: int) -> bool:
    """Make a finished (succeeded or failed) delivery pending and due now, with a fresh series of
    attempts (commits); False if it is still pending (its attempts are not over yet)."""
    changed = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.status != "pending")
        .values(
            status="pending",
            next_attempt_at=utcnow(),
            max_attempts=WebhookDelivery.attempts + attempts_per_series,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(delivery)
    return rowcount(changed) == 1
