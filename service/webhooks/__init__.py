"""Webhooks: tenants register HTTPS endpoints and receive signed POSTs when their jobs change state.

    module          what it does                                                        who runs it
    signing         whsec_ secrets, Standard Webhooks signatures and headers            API, worker
    destinations    which URLs a webhook may target (scheme, credentials, addresses)   API, worker
    events          records an event and its deliveries in the caller's transaction     service/lifecycle
    delivery        one attempt of one delivery (claim, POST, record), due deliveries   worker

An event is recorded in the same transaction as the state change it reports (service/lifecycle calls
`events.record_job_status_event` / `events.record_checkpoint_event`), with one delivery row per
subscribed endpoint; once that transaction commits the process sends `worker.deliver_webhook` for each
new delivery (ids only). The maintenance worker's sweeper re-sends deliveries whose task was lost.
This package module itself only names the event types, so the schemas can import it cheaply.
"""

from __future__ import annotations

import enum


class WebhookEventType(enum.StrEnum):
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    # Recorded each time a job becomes paused (service/lifecycle/pause.py), once per pause.
    job_paused = "job.paused"
    checkpoint_created = "checkpoint.created"


WEBHOOK_EVENT_TYPES = tuple(t.value for t in WebhookEventType)
