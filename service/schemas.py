"""Pydantic request and response bodies of the HTTP API (separate from the ORM models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.pagination import as_utc
from service.storable import MAX_CONFIG_DEPTH, deeper_than

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobCreate(BaseModel):
    """A finetuning job request. `config` follows remix_engine.config.TrainConfig (see /v1/config/schema)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=300, description="Free-form label.")
    base_model: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description=(
            "Base model: a hub id, a builtin id, job:<id>[@<step>] (a checkpoint of one of your jobs) or a local "
            "directory (admin keys, or inside REMIX_MODEL_DIRS); sets config.model.name_or_path."
        ),
    )
    dataset_id: uuid.UUID | None = Field(
        None, description="An uploaded dataset (POST /v1/datasets) used as config.data.train_path."
    )
    eval_dataset_id: uuid.UUID | None = Field(None, description="An uploaded dataset used as config.data.eval_path.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig hyperparameters (model, data, rollout, reward, algorithm, optim, ...).",
        examples=[{"total_steps": 20, "algorithm": {"name": "remix-grpo", "off_policy_fraction": 0.4}}],
    )

    @field_validator("config", mode="before")
    @classmethod
    def _shallow_enough(cls, value: Any) -> Any:
        # Refused before anything walks it recursively (validation, serialisation, the database driver).
        if deeper_than(value, MAX_CONFIG_DEPTH):
            raise ValueError(f"nested more than {MAX_CONFIG_DEPTH} levels deep")
        return value


class JobPublic(_Out):
    id: uuid.UUID
    object: str = "job"
    name: str
    status: str
    base_model: str
    dataset_id: uuid.UUID | None
    config: dict[str, Any]
    idempotency_key: str | None
    attempts: int
    current_step: int
    total_steps: int
    cancel_requested: bool
    checkpoint_on_cancel: bool
    error: str | None
    summary: dict[str, Any]
    heartbeat_at: UtcDatetime | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class JobsPage(BaseModel):
    data: list[JobPublic]
    has_more: bool
    next_cursor: str | None = Field(None, description="Pass as `after` to get the next page.")


class MetricPoint(_Out):
    step: int
    metrics: dict[str, Any]
    created_at: UtcDatetime


class MetricsPage(BaseModel):
    data: list[MetricPoint]
    has_more: bool


class EventPublic(_Out):
    id: int
    kind: str
    step: int | None
    message: str
    payload: dict[str, Any]
    created_at: UtcDatetime


class EventsPage(BaseModel):
    data: list[EventPublic]
    has_more: bool


class CheckpointPublic(_Out):
    id: uuid.UUID
    job_id: uuid.UUID
    step: int
    size_bytes: int
    metrics: dict[str, Any]
    eval_score: float | None
    created_at: UtcDatetime
    download_url: str = ""


class CheckpointsList(BaseModel):
    data: list[CheckpointPublic]


class DatasetPublic(_Out):
    id: uuid.UUID
    object: str = "dataset"
    name: str
    format: str
    num_rows: int
    size_bytes: int
    prompt_field: str
    answer_field: str
    columns: list[Any]
    preview: list[Any] = Field(description="The first rows, as parsed.")
    created_at: UtcDatetime


class DatasetsPage(BaseModel):
    data: list[DatasetPublic]
    has_more: bool
    next_cursor: str | None = None


class HealthStatus(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
