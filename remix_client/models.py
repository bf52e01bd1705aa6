"""Typed response bodies of the ReMix finetuning API, as the client sees them.

They mirror the service's public schemas (jobs, pages, metrics, events, checkpoints, datasets,
tenants, API keys, webhooks and their deliveries)
without importing the service, so the client installs alone. Unknown members sent by a newer
server are ignored; the stream items are the typed messages of `GET /v1/jobs/{id}/stream`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Job(_Model):
    id: uuid.UUID
    object: str = "job"
    name: str
    status: str
    base_model: str
    dataset_id: uuid.UUID | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    attempts: int = 0
    current_step: int = 0
    total_steps: int = 0
    cancel_requested: bool = False
    checkpoint_on_cancel: bool = False
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    heartbeat_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        """True once the job succeeded, failed or was cancelled (it will not change any more)."""
        return self.status in TERMINAL_STATUSES


class JobsPage(_Model):
    data: list[Job]
    has_more: bool
    next_cursor: str | None = None


class MetricPoint(_Model):
    step: int
    metrics: dict[str, Any]
    created_at: datetime


class Event(_Model):
    id: int
    kind: str
    step: int | None = None
    message: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Checkpoint(_Model):
    id: uuid.UUID
    job_id: uuid.UUID
    step: int
    size_bytes: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    eval_score: float | None = None
    created_at: datetime
    download_url: str = ""


class Dataset(_Model):
    id: uuid.UUID
    object: str = "dataset"
    name: str
    format: str
    num_rows: int
    size_bytes: int
    prompt_field: str
    answer_field: str
    columns: list[Any] = Field(default_factory=list)
    preview: list[Any] = Field(default_factory=list)
    created_at: datetime


class DatasetsPage(_Model):
    data: list[Dataset]
    has_more: bool
    next_cursor: str | None = None


class Tenant(_Model):
    id: uuid.UUID
    object: str = "tenant"
    name: str
    created_at: datetime


class ApiKey(_Model):
    """An API key as listings show it: its public prefix, never its secret."""

    id: uuid.UUID
    object: str = "api_key"
    tenant_id: uuid.UUID
    name: str = ""
    prefix: str
    is_admin: bool = False
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class CreatedApiKey(ApiKey):
    """A key just created or rotated, with its secret: the only time the service shows it."""

    key: str


class Webhook(_Model):
    """A webhook endpoint as listings show it, without its signing secret."""

    id: uuid.UUID
    object: str = "webhook"
    url: str
    event_types: list[str] = Field(default_factory=list)
    description: str = ""
    created_at: datetime
    secret_rotated_at: datetime | None = None


class CreatedWebhook(Webhook):
    """A webhook just created or whose secret was just rotated, with the secret: shown this once."""

    secret: str


class WebhookDelivery(_Model):
    """One event's delivery to one endpoint: attempts so far and the last outcome."""

    id: uuid.UUID
    object: str = "webhook_delivery"
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: int = 0
    last_status_code: int | None = None
    last_response: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)


class WebhookDeliveriesPage(_Model):
    data: list[WebhookDelivery]
    has_more: bool
    next_cursor: str | None = None


# --------------------------------------------------------------------------- quotas and usage


class QuotaValues(_Model):
    """A tenant's limits; None is unlimited (in `limits`) or "the operator's default" (in `overrides`)."""

    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    requests_per_second: float | None = None
    max_generated_tokens: int | None = None
    max_device_seconds: float | None = None


class UsageTotals(_Model):
    steps: int
    fresh_rollouts: int
    generated_tokens: int
    trained_tokens: int
    device_seconds: float


class JobUsage(UsageTotals):
    job_id: uuid.UUID


class TenantQuotas(_Model):
    """A tenant's limits in force, the operator's overrides, its usage so far and its job counts."""

    tenant_id: uuid.UUID
    limits: QuotaValues
    overrides: QuotaValues
    usage: UsageTotals
    running_jobs: int
    queued_jobs: int


class UsageReport(_Model):
    """Usage recorded in [start, end): totals and one entry per job."""

    start: datetime | None = Field(None, alias="from")
    end: datetime | None = Field(None, alias="to")
    totals: UsageTotals
    jobs: list[JobUsage]


# --------------------------------------------------------------------------- stream items


class StreamMetric(_Model):
    """One training step's metrics (SSE message `metric`)."""

    kind: Literal["metric"] = "metric"
    id: str
    metric: MetricPoint


class StreamEvent(_Model):
    """One lifecycle event (SSE message named after the event kind: queued, started, checkpoint, ...)."""

    kind: Literal["event"] = "event"
    id: str
    event: Event


class StreamEnd(_Model):
    """The last message: the job is terminal and everything before it was delivered."""

    kind: Literal["end"] = "end"
    id: str
    job_id: uuid.UUID
    status: str | None


StreamItem = StreamMetric | StreamEvent | StreamEnd
