"""Runtime settings of the API and the workers, read from `REMIX_*` environment variables.

One `Settings` class is shared by the API process, the Celery workers and the admin CLI.
The defaults run everything embedded on one machine (SQLite database, SQLite-backed Celery
broker, artifacts on local disk); production points them at Postgres, Redis/RabbitMQ and S3.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
# Used when REMIX_GPU_MEMORY_GIB / REMIX_MAX_TOKENS_PER_STEP are not set: one 80 GB GPU, and 2**25
# generated tokens per step (e.g. 512 prompts x 16 responses x 4096 tokens, or 64 x 8 x 65536).
DEFAULT_GPU_MEMORY_GIB = 80.0
DEFAULT_MAX_TOKENS_PER_STEP = 2**25


class Settings(BaseSettings):
    """Typed configuration; every field can be set with `REMIX_<FIELD>` (e.g. REMIX_DATABASE_URL)."""

    model_config = SettingsConfigDict(env_prefix="REMIX_", env_file=".env", extra="ignore")

    env: Literal["dev", "prod"] = Field("dev", description="'prod' refuses the embedded SQLite defaults.")
    database_url: str = Field(
        "sqlite:///./var/remix.db",
        description="SQLAlchemy URL; Postgres uses psycopg 3: postgresql+psycopg://user:pw@host/db.",
    )
    broker_url: str = Field(
        "sqla+sqlite:///./var/broker.db",
        description="Celery broker: redis://host:6379/0, amqp://..., or the embedded SQLite transport.",
    )
    artifacts_dir: str = Field("./var/artifacts", description="Root of the local artifact store.")
    artifacts_s3_bucket: str | None = Field(
        None, description="If set, artifacts live in this S3 bucket instead of artifacts_dir (needs boto3)."
    )
    artifacts_s3_prefix: str = Field("", description="Key prefix inside the S3 bucket.")
    artifacts_s3_endpoint: str | None = Field(None, description="S3-compatible endpoint (MinIO, R2, ...).")
    max_upload_bytes: int = Field(50 * MIB, ge=1, description="Largest accepted dataset upload.")
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often a running job writes heartbeat_at.")
    stale_after_seconds: float = Field(120.0, gt=0, description="A running job without heartbeat is re-queued.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a repeatedly crashing job is failed.")
    node_address: str | None = Field(
        None,
        description=(
            "Address the other workers of a multi-node job reach this worker at (its c10d rendezvous and "
            "its ranks); unset: this machine's hostname."
        ),
    )
    rendezvous_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="How long the nodes of a multi-node job may take to gather before its attempt fails.",
    )
    task_queue: str = Field("gpu", min_length=1, description="Celery queue the training tasks go to.")
    sse_poll_seconds: float = Field(0.5, gt=0, description="How often the event stream polls the database.")
    sse_keepalive_seconds: float = Field(15.0, gt=0, description="Idle time before an SSE comment is sent.")
    db_retry_after_seconds: int = Field(5, ge=1, description="Retry-After sent when the database is down.")
    gpu_memory_gib: float = Field(
        DEFAULT_GPU_MEMORY_GIB,
        gt=0,
        description="Memory of one GPU of the workers, in GiB (default 80). The API refuses (422) a job whose "
        "memory pre-flight estimate does not fit, before it is queued; set it to the workers' GPU size.",
    )
    max_tokens_per_step: int = Field(
        DEFAULT_MAX_TOKENS_PER_STEP,
        ge=1,
        description="Most tokens one training step may generate (rollout.prompts_per_step x "
        "rollout.group_size x rollout.max_new_tokens); the API refuses (422) a job above it.",
    )
    model_dirs: str = Field(
        "",
        description="Local model directories any tenant may train from (os.pathsep-separated absolute paths, "
        "e.g. /models:/data/models): config.model.name_or_path may be one of them or a directory inside one "
        "(symlinks and '..' resolved before the check). Every other local path is reserved to admin keys. "
        "Read by the API; mount the directories at the same paths on the API host and the workers.",
    )
    worker_db_retry_seconds: float = Field(
        120.0,
        ge=0,
        description="How long a worker retries a database write through an outage (training waits) "
        "before it fails the job.",
    )
    default_max_running_jobs: int | None = Field(
        None,
        ge=0,
        description="Jobs of one tenant that may run at once, unless the operator set the tenant's own limit "
        "(PUT /v1/tenants/{id}/quotas); unset: no limit. Enforced when a worker claims a job: a job over the "
        "limit stays queued and its task is retried every quota_retry_seconds.",
    )
    default_max_queued_jobs: int | None = Field(
        None, ge=0, description="Queued jobs one tenant may have; a submission over it gets 429 quota-exceeded."
    )
    default_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="API requests per second one tenant may make (a token bucket in Redis shared by every API "
        "worker, holding rate_limit_burst_seconds of requests); over it: 429 with Retry-After. Unset: no limit.",
    )
    default_max_generated_tokens: int | None = Field(
        None,
        ge=0,
        description="Training budget: tokens one tenant's jobs may generate in total; once used up, "
        "submissions get 403 quota-exceeded. Unset: no limit.",
    )
    default_max_device_seconds: float | None = Field(
        None,
        ge=0,
        description="Training budget: device-seconds (step time x training processes) one tenant's jobs may "
        "use in total; once used up, submissions get 403 quota-exceeded. Unset: no limit.",
    )
    rate_limit_burst_seconds: float = Field(
        1.0, gt=0, description="Size of a tenant's request bucket, in seconds of its requests_per_second."
    )
    redis_url: str | None = Field(
        None,
        description="Redis holding the request-rate buckets; unset: broker_url when that is redis://, else "
        "each API process keeps its own buckets (a single-process deployment only).",
    )
    quota_retry_seconds: float = Field(
        15.0, gt=0, description="How long a job held back by its tenant's running-jobs limit waits between claims."
    )
    auth_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How long an API process reuses an API-key lookup (and the tenant's request rate): a key "
        "revoked elsewhere is refused at most this long after the revocation commits (at once by the process "
        "that revoked it). 0: every request reads the key table.",
    )
    # Read by the engine on the worker from the environment (remix_engine/sandbox_jail.py, scoring.py);
    # declared here so that they are validated and documented with the other settings.
    reward_sandbox: Literal["bwrap", "process"] = Field(
        "bwrap",
        description="How the python reward is isolated: 'bwrap' (namespaces, seccomp, uid 65534; a worker "
        "without bubblewrap refuses the reward) or 'process' (weaker, for trusted tenants only: "
        "docs/security.md).",
    )
    reward_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="Wall-clock budget for scoring one batch with the builtin rewards (python rewards add "
        "their own per-sample limits); past it the job fails with RewardScoringError.",
    )
    # The judge reward's endpoint (remix_engine/judge.py), read by the engine on the workers from the
    # same environment variables, and by the API for POST /v1/rewards/dry-run and at submission.
    judge_url: str | None = Field(
        None,
        description="Base URL of the OpenAI-compatible chat-completions API the 'judge' reward calls (e.g. "
        "https://api.openai.com/v1; requests go to <url>/chat/completions). Unset: jobs and dry runs with a "
        "judge reward are refused (422). Only the operator names it: a job cannot.",
    )
    judge_model: str | None = Field(None, description="Model name sent to the judge endpoint (needed with judge_url).")
    judge_api_key: SecretStr | None = Field(None, description="Sent to the judge endpoint as a Bearer token.")
    judge_concurrency: int = Field(8, ge=1, le=64, description="Judge requests in flight at once per batch.")
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="Operator token for GET /metrics, sent as 'Authorization: Bearer <token>' (at least 16 "
        "characters); admin API keys are accepted too. Unset: only admin API keys.",
    )
    metrics_unauthenticated: bool = Field(
        False,
        description="Serve GET /metrics without any authentication. Only for an API port tenants cannot reach: "
        "the metrics show job counts, job ids and queue depth across every tenant.",
    )

    tracking_allow_local: bool = Field(
        False,
        description="Let a job's MLflow integration name a local store (file:, sqlite:, a database URL, a path) "
        "instead of an http(s) tracking server. Off by default: the worker would write where a tenant says.",
    )
    tracking_queue_size: int = Field(
        10000,
        ge=1,
        description="Tracking calls (metrics rows, checkpoints) a job may have waiting for a slow tracker; beyond "
        "it they are dropped and counted, so training never waits on a tracker.",
    )
    tracking_close_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a finishing job waits for its trackers to take what is queued before leaving them.",
    )

    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks target loopback, private, link-local and other non-public addresses. Off by "
        "default: tenants are untrusted, and a webhook would otherwise reach the operator's internal network.",
    )
    webhook_retry_schedule: str = Field(
        "5,60,300,1800",
        description="Seconds to wait before each retry of a failed webhook delivery, comma-separated; a delivery "
        "is tried once plus once per entry (default 5 attempts) before it is marked failed.",
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one webhook request.")
    webhook_sweep_seconds: float = Field(
        30.0,
        gt=0,
        description="How often the maintenance worker re-sends webhook deliveries that are due but whose task "
        "was lost (a broker outage, a worker killed mid-delivery).",
    )

    @field_validator("model_dirs")
    @classmethod
    def _absolute_model_dirs(cls, value: str) -> str:
        relative = [entry for entry in value.split(os.pathsep) if entry and not os.path.isabs(entry)]
        if relative:
            raise ValueError(f"REMIX_MODEL_DIRS takes absolute directories only; relative: {relative}")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule_is_numbers(cls, value: str) -> str:
        try:
            delays = [float(entry) for entry in value.split(",") if entry.strip()]
        except ValueError as exc:
            raise ValueError("REMIX_WEBHOOK_RETRY_SCHEDULE takes comma-separated seconds, e.g. 5,60,300") from exc
        if any(delay < 0 for delay in delays):
            raise ValueError("REMIX_WEBHOOK_RETRY_SCHEDULE takes non-negative seconds")
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """REMIX_WEBHOOK_RETRY_SCHEDULE as seconds: the wait before retry 1, 2, ..."""
        return tuple(float(entry) for entry in self.webhook_retry_schedule.split(",") if entry.strip())

    @property
    def webhook_max_attempts(self) -> int:
        return len(self.webhook_retry_delays) + 1

    @property
    def model_dir_list(self) -> tuple[str, ...]:
        """REMIX_MODEL_DIRS as a tuple of absolute directories (empty entries skipped)."""
        return tuple(entry for entry in self.model_dirs.split(os.pathsep) if entry)

    @field_validator(
        "metrics_token",
        "judge_url",
        "judge_model",
        "judge_api_key",
        "redis_url",
        "default_max_running_jobs",
        "default_max_queued_jobs",
        "default_requests_per_second",
        "default_max_generated_tokens",
        "default_max_device_seconds",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `REMIX_METRICS_TOKEN: ${REMIX_METRICS_TOKEN:-}`: empty means "not configured".
        return None if value == "" else value

    @field_validator("judge_url")
    @classmethod
    def _judge_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("REMIX_JUDGE_URL must be an http:// or https:// URL")
        return value

    @property
    def rate_limit_redis_url(self) -> str | None:
        """Where the request-rate buckets live (None: in this process)."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def judge_configured(self) -> bool:
        """Whether the judge reward can run: an endpoint and a model are configured."""
        return self.judge_url is not None and self.judge_model is not None

    def judge_env(self) -> dict[str, str]:
        """The REMIX_JUDGE_* variables of these settings, for a scoring child of the API."""
        return {
            "REMIX_JUDGE_URL": self.judge_url or "",
            "REMIX_JUDGE_MODEL": self.judge_model or "",
            "REMIX_JUDGE_API_KEY": self.judge_api_key.get_secret_value() if self.judge_api_key else "",
            "REMIX_JUDGE_CONCURRENCY": str(self.judge_concurrency),
        }

    @model_validator(mode="after")
    def _refuse_embedded_defaults_in_prod(self) -> Settings:
        # The embedded defaults are fine on a laptop, but silently losing data in production is not.
        if self.env == "prod":
            if self.database_url.startswith("sqlite"):
                raise ValueError("REMIX_DATABASE_URL must point at a server database when REMIX_ENV=prod")
            if self.broker_url.startswith("sqla+"):
                raise ValueError("REMIX_BROKER_URL must point at Redis or RabbitMQ when REMIX_ENV=prod")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; FastAPI routes get them through `SettingsDep`)."""
    return Settings()
