"""One attempt of one webhook delivery, run by the `worker.deliver_webhook` task, and the sweep for
deliveries whose task was lost.

An attempt first claims the delivery with a conditional UPDATE (pending, due) that counts the attempt
and pushes `next_attempt_at` past the request's timeout, a lease: a second copy of the task (a
redelivered message, the sweeper) finds it not due and does nothing, and a worker killed mid-request
leaves it due again once the lease ends. The POST happens outside any transaction; redirects are not
followed (a 3xx is a failed attempt) and only the first RESPONSE_SNIPPET_CHARS of the answer are read.
A 2xx marks it succeeded; otherwise it waits for the next delay of REMIX_WEBHOOK_RETRY_SCHEDULE, or
is marked failed after the last attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.models import WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from service.settings import Settings
from service.webhooks.destinations import DestinationRefused, check_destination
from service.webhooks.signing import signed_headers

RESPONSE_SNIPPET_CHARS = 1000
LEASE_MARGIN_S = 30.0
USER_AGENT = "remix-webhooks/0.1"


@dataclass(frozen=True)
class AttemptOutcome:
    status: str  # succeeded | failed | pending (a retry is due in `retry_in` seconds)
    attempt: int
    retry_in: float | None


@dataclass(frozen=True)
class _Request:
    url: str
    secret: str
    message_id: str
    body: bytes


def deliver(sessions: sessionmaker[Session], settings: Settings, delivery_id: uuid.UUID) -> AttemptOutcome | None:
    """Make one attempt if the delivery is pending and due; None if it is not (done, or in flight)."""
    claimed = _claim(sessions, settings, delivery_id)
    if claimed is None:
        return None
    attempt, max_attempts, request = claimed
    status_code, snippet, error = _post(settings, request)
    succeeded = status_code is not None and 200 <= status_code < 300
    now = utcnow()
    retry_in = None if succeeded or attempt >= max_attempts else _delay(settings, attempt, max_attempts)
    status = "succeeded" if succeeded else ("pending" if retry_in is not None else "failed")
    with sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
            .values(
                status=status,
                last_status_code=status_code,
                last_response=snippet,
                last_error=error,
                delivered_at=now if succeeded else None,
                next_attempt_at=None if retry_in is None else now + timedelta(seconds=retry_in),
            )
            .execution_options(synchronize_session=False)
        )
    return AttemptOutcome(status, attempt, retry_in)


def due_deliveries(session: Session, *, older_than_s: float, limit: int = 500) -> list[uuid.UUID]:
    """Pending deliveries due for at least `older_than_s` seconds: their task was lost (or is late)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    query = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= cutoff)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def _claim(
    sessions: sessionmaker[Session], settings: Settings, delivery_id: uuid.UUID
) -> tuple[int, int, _Request] | None:
    now = utcnow()
    lease = timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_S)
    with sessions.begin() as session:
        row = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
            )
            .values(attempts=WebhookDelivery.attempts + 1, last_attempt_at=now, next_attempt_at=now + lease)
            .returning(WebhookDelivery.attempts, WebhookDelivery.max_attempts, WebhookDelivery.webhook_id)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is None:
            return None
        attempt, max_attempts, webhook_id = row
        endpoint = session.get_one(WebhookEndpoint, webhook_id)
        event = session.scalar(select(WebhookEvent).join(WebhookDelivery).where(WebhookDelivery.id == delivery_id))
        assert event is not None  # the foreign key guarantees it
        body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False).encode()
        request = _Request(endpoint.url, endpoint.secret, f"msg_{event.id.hex}", body)
    return attempt, max_attempts or settings.webhook_max_attempts, request


def _post(settings: Settings, request: _Request) -> tuple[int | None, str | None, str | None]:
    """(status code, start of the response body, error) of one POST."""
    try:
        check_destination(request.url, allow_private=settings.webhook_allow_private)
    except DestinationRefused as refused:
        return None, None, f"destination refused: {refused}"
    headers = signed_headers(request.secret, request.message_id, int(time.time()), request.body)
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    try:
        with (
            httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as http,
            http.stream("POST", request.url, content=request.body, headers=headers) as response,
        ):
            snippet = _snippet(response)
            code = response.status_code
    except httpx.HTTPError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"[:RESPONSE_SNIPPET_CHARS]
    if 200 <= code < 300:
        return code, snippet, None
    if response.is_redirect:
        return code, snippet, f"HTTP {code}: redirect to {response.headers.get('location', '?')} not followed"
    return code, snippet, f"HTTP {code}"


def _snippet(response: httpx.Response) -> str:
    data = b""
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= RESPONSE_SNIPPET_CHARS * 4:  # enough bytes for the characters kept
            break
    text = data.decode(response.encoding or "utf-8", errors="replace")
    return text[:RESPONSE_SNIPPET_CHARS].replace("\x00", "\ufffd")  # Postgres TEXT refuses NUL


def _delay(settings: Settings, attempt: int, max_attempts: int) -> float:
    """Wait before the next try: the schedule restarts at its first entry after a redelivery."""
    delays = settings.webhook_retry_delays or (0.0,)
    first_of_series = max(0, max_attempts - settings.webhook_max_attempts)
    index = min(max(attempt - first_of_series - 1, 0), len(delays) - 1)
    return delays[index]
