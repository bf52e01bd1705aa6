"""/v1/webhooks: a tenant's webhook endpoints (register, list, read, delete, rotate the secret) and
their delivery logs (list, redeliver).

Another tenant's webhook is a 404, as if it did not exist. The signing secret is shown once, in the
answer that creates (or rotates) it. The destination URL is checked here and again before every
attempt (service/webhooks/destinations.py).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from service.account_schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveriesPage,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhooksList,
)
from service.api.deps import CurrentTenant, Principal, SessionDep, SettingsDep
from service.errors import ConflictError, FieldValidationError, NotFoundError
from service.models import WebhookEndpoint
from service.pagination import decode_cursor, encode_cursor
from service.queue import enqueue_webhook_delivery
from service.repositories import webhooks as webhooks_repo
from service.webhooks.destinations import DestinationRefused, check_destination

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def owned_webhook(session: Session, caller: Principal, webhook_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = webhooks_repo.get_endpoint(session, caller.tenant_id, webhook_id)
    if endpoint is None:
        raise NotFoundError("webhook", webhook_id)
    return endpoint


def _with_secret(endpoint: WebhookEndpoint) -> WebhookCreated:
    return WebhookCreated.model_validate(
        {**WebhookPublic.model_validate(endpoint).model_dump(), "secret": endpoint.secret}
    )


@router.post("", status_code=201, responses={422: PROBLEM | {"description": "Invalid or refused URL"}})
def create_webhook(
    body: WebhookCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    caller: CurrentTenant,
) -> WebhookCreated:
    """Register an endpoint; the answer carries its signing secret, shown this once."""
    try:
        check_destination(body.url, allow_private=settings.webhook_allow_private)
    except DestinationRefused as refused:
        raise FieldValidationError([{"field": "url", "message": str(refused)}]) from refused
    endpoint = webhooks_repo.create_endpoint(
        session, caller.tenant_id, url=body.url, event_types=body.event_types, description=body.description
    )
    response.headers["Location"] = request.app.url_path_for("get_webhook", webhook_id=str(endpoint.id))
    return _with_secret(endpoint)


@router.get("")
def list_webhooks(session: SessionDep, caller: CurrentTenant) -> WebhooksList:
    """Your tenant's endpoints, oldest first (never their secrets)."""
    rows = webhooks_repo.list_endpoints(session, caller.tenant_id)
    return WebhooksList(data=[WebhookPublic.model_validate(row) for row in rows])


@router.get("/{webhook_id}", responses={404: PROBLEM})
def get_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> WebhookPublic:
    """One of your endpoints."""
    return WebhookPublic.model_validate(owned_webhook(session, caller, webhook_id))


@router.delete("/{webhook_id}", status_code=204, responses={404: PROBLEM})
def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> Response:
    """Delete an endpoint with its delivery log; deliveries still pending are dropped."""
    webhooks_repo.delete_endpoint(session, owned_webhook(session, caller, webhook_id))
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", responses={404: PROBLEM})
def rotate_webhook_secret(webhook_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> WebhookCreated:
    """Replace the signing secret (the new one is in the answer, shown once); the old one stops at once."""
    return _with_secret(webhooks_repo.rotate_secret(session, owned_webhook(session, caller, webhook_id)))


@router.get("/{webhook_id}/deliveries", responses={400: PROBLEM, 404: PROBLEM})
def list_deliveries(
    *,
    webhook_id: uuid.UUID,
    session: SessionDep,
    caller: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="Cursor from a previous page's next_cursor.")] = None,
) -> WebhookDeliveriesPage:
    """The endpoint's delivery log, newest first: attempts, last answer or error, next retry."""
    endpoint = owned_webhook(session, caller, webhook_id)
    cursor = decode_cursor(after) if after else None
    rows, has_more = webhooks_repo.list_deliveries(session, endpoint.id, limit=limit, after=cursor)
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if rows and has_more else None
    return WebhookDeliveriesPage(
        data=[WebhookDeliveryPublic.model_validate(row) for row in rows], has_more=has_more, next_cursor=next_cursor
    )


@router.get("/{webhook_id}/deliveries/{delivery_id}", responses={404: PROBLEM})
def get_delivery(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, session: SessionDep, caller: CurrentTenant
) -> WebhookDeliveryPublic:
    """One delivery of the endpoint."""
    endpoint = owned_webhook(session, caller, webhook_id)
    delivery = webhooks_repo.get_delivery(session, endpoint.id, delivery_id)
    if delivery is None:
        raise NotFoundError("webhook delivery", delivery_id)
    return WebhookDeliveryPublic.model_validate(delivery)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    responses={404: PROBLEM, 409: PROBLEM | {"description": "The delivery is still pending"}},
)
def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, session: SessionDep, settings: SettingsDep, caller: CurrentTenant
) -> WebhookDeliveryPublic:
    """Send a succeeded or failed delivery again (same webhook-id, signed anew), with a fresh series of retries."""
    endpoint = owned_webhook(session, caller, webhook_id)
    delivery = webhooks_repo.get_delivery(session, endpoint.id, delivery_id)
    if delivery is None:
        raise NotFoundError("webhook delivery", delivery_id)
    if not webhooks_repo.queue_redelivery(session, delivery, settings.webhook_max_attempts):
        raise ConflictError(f"webhook delivery {delivery_id} is still pending", slug="delivery-pending")
    try:
        enqueue_webhook_delivery(settings, delivery.id)
    except Exception:  # the delivery is pending and due: the sweeper sends it once the broker is back
        log.warning("could not send the redelivery of %s now; the sweeper will", delivery.id, exc_info=True)
    return WebhookDeliveryPublic.model_validate(delivery)
