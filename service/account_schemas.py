"""Request and response bodies of the account routes: tenants, API keys, webhooks, quotas and usage."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.schemas import ResponseModel, UtcDatetime
from service.storable import REASON, is_storable_text
from service.webhooks import WEBHOOK_EVENT_TYPES, WebhookEventType

TENANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"


def _storable_label(value: str) -> str:
    if not is_storable_text(value):
        raise ValueError(REASON)
    return value


class TenantCreate(BaseModel):
    """A new tenant (admin keys only)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=TENANT_NAME_PATTERN,
        description="Unique name: letters, digits and . _ @ -, starting with a letter or digit.",
    )


class TenantPublic(ResponseModel):
    id: uuid.UUID
    object: str = "tenant"
    name: str
    created_at: UtcDatetime


class TenantsList(BaseModel):
    data: list[TenantPublic]


class ApiKeyCreate(BaseModel):
    """A new API key of a tenant (admin keys only)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_storable_label)] = Field(
        "", max_length=200, description="Label of the key (e.g. who uses it)."
    )
    admin: bool = Field(False, description="An admin key: tenants and keys of everyone, local model paths.")


class ApiKeyPublic(ResponseModel):
    """An API key as listings show it: never its secret, only the public prefix."""

    id: uuid.UUID
    object: str = "api_key"
    tenant_id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the secret, to recognise the key.")
    is_admin: bool
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = Field(description="When the key stopped working; null while it works.")


class ApiKeyCreated(ApiKeyPublic):
    """A key just created or rotated: the only response that carries its secret."""

    key: str = Field(description="The secret (`rmx_...`); shown once, only its hash is stored.")


class ApiKeysList(BaseModel):
    data: list[ApiKeyPublic]


class WebhookCreate(BaseModel):
    """A new webhook endpoint of your tenant."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="Where events are POSTed: http:// or https://, no credentials, a public address (unless the "
        "operator allows private ones).",
        examples=["https://example.com/remix-hooks"],
    )
    event_types: list[WebhookEventType] = Field(
        default_factory=lambda: list(WebhookEventType),
        min_length=1,
        description=f"The event types to receive (default: all of {', '.join(WEBHOOK_EVENT_TYPES)}).",
    )
    description: Annotated[str, AfterValidator(_storable_label)] = Field("", max_length=500)


class WebhookPublic(ResponseModel):
    id: uuid.UUID
    object: str = "webhook"
    url: str
    event_types: list[str]
    description: str
    created_at: UtcDatetime
    secret_rotated_at: UtcDatetime | None = Field(description="When the signing secret was last replaced.")


class WebhookCreated(WebhookPublic):
    """A webhook just created, or whose secret was just rotated: the only response carrying the secret."""

    secret: str = Field(description="The signing secret (`whsec_<base64>`); shown once.")


class WebhooksList(BaseModel):
    data: list[WebhookPublic]


class WebhookDeliveryPublic(ResponseModel):
    """One event's delivery to one endpoint: attempts so far and the outcome of the last one."""

    id: uuid.UUID
    object: str = "webhook_delivery"
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str = Field(description="pending (a try is due at next_attempt_at), succeeded or failed (gave up).")
    attempts: int
    last_status_code: int | None = Field(description="HTTP status of the last attempt; null if none answered.")
    last_response: str | None = Field(description="The start of the last answer's body (at most 1000 characters).")
    last_error: str | None
    next_attempt_at: UtcDatetime | None
    last_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    created_at: UtcDatetime
    payload: dict[str, Any] = Field(description="The request body: {type, timestamp, data}.")


class WebhookDeliveriesPage(BaseModel):
    data: list[WebhookDeliveryPublic]
    has_more: bool
    next_cursor: str | None = Field(None, description="Pass as `after` to get the next page.")


class QuotaValues(BaseModel):
    """A tenant's limits; null is unlimited (in `limits`) or 'the operator's default applies' (in `overrides`)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    max_running_jobs: int | None = Field(None, ge=0, description="Jobs running at once; more stay queued.")
    max_queued_jobs: int | None = Field(None, ge=0, description="Queued jobs; a submission past it gets 429.")
    requests_per_second: float | None = Field(None, gt=0, description="API requests per second; past it 429.")
    max_generated_tokens: int | None = Field(
        None, ge=0, description="Training budget in generated tokens, all jobs together; used up: 403."
    )
    max_device_seconds: float | None = Field(
        None, ge=0, description="Training budget in device-seconds, all jobs together; used up: 403."
    )


class UsageTotals(ResponseModel):
    """What training consumed: steps recorded, fresh rollouts, generated and trained tokens, device-seconds."""

    steps: int
    fresh_rollouts: int
    generated_tokens: int
    trained_tokens: int
    device_seconds: float


class TenantQuotas(BaseModel):
    """A tenant's limits in force (`limits`), the operator's overrides of the defaults, and its usage so far."""

    tenant_id: uuid.UUID
    limits: QuotaValues
    overrides: QuotaValues
    usage: UsageTotals
    running_jobs: int
    queued_jobs: int


class JobUsage(UsageTotals):
    job_id: uuid.UUID


class UsageReport(BaseModel):
    """Usage recorded in [from, to) (recorded_at of each step), in total and per job."""

    model_config = ConfigDict(populate_by_name=True)

    from_: UtcDatetime | None = Field(None, alias="from")
    to: UtcDatetime | None = None
    totals: UsageTotals
    jobs: list[JobUsage]
