"""Pydantic request and response bodies of the HTTP API (separate from the ORM models)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from remix_engine.config import RewardConfig
from service.pagination import as_utc
from service.storable import MAX_CONFIG_DEPTH, REASON, deeper_than, is_storable_text

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

# Job metadata bounds (the same as OpenAI's for its objects' metadata).
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512


def _storable_metadata(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not (is_storable_text(key) and is_storable_text(item)):
            raise ValueError(f"{key!r}: {REASON}")
    return value


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=METADATA_MAX_KEY_CHARS)]
MetadataValue = Annotated[str, StringConstraints(max_length=METADATA_MAX_VALUE_CHARS)]
JobMetadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=METADATA_MAX_PAIRS,
        description=f"Up to {METADATA_MAX_PAIRS} string pairs of your own (keys of 1 to {METADATA_MAX_KEY_CHARS} "
        f"characters, values of at most {METADATA_MAX_VALUE_CHARS}); filter the job list with "
        "`?metadata[key]=value`.",
        examples=[{"team": "search", "experiment": "kl-sweep-3"}],
    ),
    AfterValidator(_storable_metadata),
]


class ResponseModel(BaseModel):
    """A response body read from ORM objects' attributes."""

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
    metadata: JobMetadata = Field(default_factory=dict)

    @field_validator("config", mode="before")
    @classmethod
    def _shallow_enough(cls, value: Any) -> Any:
        # Refused before anything walks it recursively (validation, serialisation, the database driver).
        if deeper_than(value, MAX_CONFIG_DEPTH):
            raise ValueError(f"nested more than {MAX_CONFIG_DEPTH} levels deep")
        return value


class JobPublic(ResponseModel):
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
    # The ORM attribute is `job_metadata` (declarative classes reserve `metadata`); tried first, since
    # every ORM object also has a `metadata` attribute (the tables').
    metadata: dict[str, str] = Field(  # type: ignore[pydantic-alias]  # always present: an ORM column or a body key
        validation_alias=AliasChoices("job_metadata", "metadata")
    )


class JobUpdate(BaseModel):
    """What PATCH /v1/jobs/{id} changes: the job's metadata, replaced as a whole."""

    model_config = ConfigDict(extra="forbid")

    metadata: JobMetadata


class JobsPage(BaseModel):
    data: list[JobPublic]
    has_more: bool
    next_cursor: str | None = Field(None, description="Pass as `after` to get the next page.")


class MetricPoint(ResponseModel):
    step: int
    metrics: dict[str, Any]
    created_at: UtcDatetime


class MetricsPage(BaseModel):
    data: list[MetricPoint]
    has_more: bool


class EventPublic(ResponseModel):
    id: int
    kind: str
    step: int | None
    message: str
    payload: dict[str, Any]
    created_at: UtcDatetime


class EventsPage(BaseModel):
    data: list[EventPublic]
    has_more: bool


class CheckpointPublic(ResponseModel):
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


class DatasetPublic(ResponseModel):
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
    detected_format: str = Field(
        description="The layout recognised: openai-chat, verl, gsm8k, math or prompt-answer (any other)."
    )
    fields_used: dict[str, str] = Field(description="The columns read as the prompt and the answer.")
    rendered_prompt: str | None = Field(
        None, description="The first prompt as the model named at upload sees it (its chat template applied)."
    )
    rendered_with: str | None = Field(None, description="The model whose tokenizer rendered it.")
    prompt_tokens: dict[str, Any] | None = Field(
        None,
        description="With a model: {'max', 'checked', 'max_prompt_tokens', 'overlong'}: the longest prompt in "
        "tokens over the first `checked` rows, and how many exceed max_prompt_tokens.",
    )
    created_at: UtcDatetime


class DatasetsPage(BaseModel):
    data: list[DatasetPublic]
    has_more: bool
    next_cursor: str | None = None


class HealthStatus(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# Bounds of POST /v1/rewards/dry-run (the whole body is also capped at 1 MiB: service/body_limit.py).
DRY_RUN_MAX_COMPLETIONS = 64
DRY_RUN_MAX_COMPLETION_CHARS = 64 * 1024
DRY_RUN_MAX_ROW_BYTES = 256 * 1024
DRY_RUN_MAX_ROW_DEPTH = 32

DryRunCompletion = Annotated[str, Field(max_length=DRY_RUN_MAX_COMPLETION_CHARS)]


class RewardDryRun(BaseModel):
    """Score completions against one dataset row with a reward config, exactly as a job's rewards would."""

    model_config = ConfigDict(extra="forbid")

    reward: RewardConfig = Field(description="The `reward` section of a job config (see /v1/config/schema).")
    row: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "One dataset row: 'answer' is the reference answer (a string or number; missing: empty), 'prompt' "
            "the prompt, every other column is what rewards read from the row (string_check's field, the "
            f"python reward's row, the judge rubric's placeholders). At most {DRY_RUN_MAX_ROW_BYTES} bytes as "
            f"JSON, {DRY_RUN_MAX_ROW_DEPTH} levels deep."
        ),
        examples=[{"prompt": "What is 6 x 7?", "answer": "42", "unit": "apples"}],
    )
    completions: list[DryRunCompletion] = Field(
        min_length=1,
        max_length=DRY_RUN_MAX_COMPLETIONS,
        description=f"1 to {DRY_RUN_MAX_COMPLETIONS} completions of at most {DRY_RUN_MAX_COMPLETION_CHARS} "
        "characters each, all scored against the row.",
        examples=[["The answer is \\boxed{42}.", "41"]],
    )

    @field_validator("row", mode="before")
    @classmethod
    def _shallow_enough(cls, value: Any) -> Any:
        if deeper_than(value, DRY_RUN_MAX_ROW_DEPTH):
            raise ValueError(f"nested more than {DRY_RUN_MAX_ROW_DEPTH} levels deep")
        return value

    @field_validator("row")
    @classmethod
    def _small_enough(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > DRY_RUN_MAX_ROW_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {DRY_RUN_MAX_ROW_BYTES}")
        answer = value.get("answer", "")
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError("'answer' must be a string or a number")
        return value


class RewardDryRunResult(BaseModel):
    scores: list[float] = Field(description="Weighted total of each completion (what training would use).")
    parts: dict[str, list[float]] = Field(
        description="Each reward's unweighted scores, by name ('name#2' for a repeat), in config order; "
        "a reward that does not apply or failed scores 0."
    )
    errors: dict[str, list[str | None]] = Field(
        description="Each reward's error per completion (null: none), e.g. a python reward that raised, a "
        "string_check field missing from the row, a judge request that timed out."
    )
