"""Experiment trackers a job reports to (MLflow, Weights & Biases): the `integrations` list of a TrainConfig.

Each entry names where the job's parameters, per-step metrics, checkpoint references and final
status are mirrored; the worker does the reporting (worker/tracking.py), the trainer never sees it.
No entry carries a secret: API keys and tracking-server credentials come from the worker's
environment (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD), so a tracking
URI with a user or password in it is refused. Whether a local MLflow store (file:, sqlite:, a path)
may be named is the operator's choice (REMIX_TRACKING_ALLOW_LOCAL), checked by the API and again by
the worker with `check_tracking_uri`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from remix_engine.config.limits import StrictModel

MAX_INTEGRATIONS = 4
MAX_TRACKING_TAGS = 32
_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.\-/:]*$"  # experiment, project, entity and run names: no control characters
REMOTE_TRACKING_SCHEMES = ("http", "https")
LOCAL_TRACKING_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql")


class LocalTrackingRefused(ValueError):
    """A tracking URI names a store on the worker's own disk (or database) where that is not allowed."""


def check_tracking_uri(uri: str, *, allow_local: bool) -> None:
    """Refuse a tracking URI outside http(s) unless `allow_local`: a tenant must not make the worker
    write files or open databases of its choosing."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in REMOTE_TRACKING_SCHEMES or allow_local:
        return
    raise LocalTrackingRefused(
        f"tracking_uri must be http:// or https:// (got {scheme + ':' if scheme else 'a local path'}); "
        "local stores need the operator setting REMIX_TRACKING_ALLOW_LOCAL=true"
    )


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not key or len(key) > 250 or len(value) > 5000:
            raise ValueError("tags: keys are 1-250 characters, values at most 5000")
    return tags


class MlflowIntegration(StrictModel):
    """An MLflow run in `experiment_name` on the tracking server at `tracking_uri`."""

    type: Literal["mlflow"]
    tracking_uri: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "The MLflow tracking server, http:// or https:// (file: and database stores only where the operator "
            "set REMIX_TRACKING_ALLOW_LOCAL). No credentials here: the worker's MLFLOW_TRACKING_TOKEN or "
            "MLFLOW_TRACKING_USERNAME/PASSWORD are used."
        ),
    )
    experiment_name: str = Field(
        "remix", min_length=1, max_length=250, pattern=_NAME, description="Experiment, created when missing."
    )
    run_name: str | None = Field(
        None, min_length=1, max_length=250, pattern=_NAME, description="Run name; default: the job id."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_TRACKING_TAGS, description="Extra run tags (remix.job_id is always set)."
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials_in_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() in REMOTE_TRACKING_SCHEMES:
            if not parts.hostname:
                raise ValueError("tracking_uri names no host")
            if parts.username or parts.password:
                raise ValueError("tracking_uri must not carry credentials; the worker's environment provides them")
        elif parts.scheme and parts.scheme.lower() not in LOCAL_TRACKING_SCHEMES and len(parts.scheme) > 1:
            raise ValueError(
                f"tracking_uri scheme {parts.scheme!r} is not supported; use http(s)"
                f" (or, where allowed, {', '.join(LOCAL_TRACKING_SCHEMES)})"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_tags(value)


class WandbIntegration(StrictModel):
    """A Weights & Biases run in `project`; offline runs are written under the job's output folder."""

    type: Literal["wandb"]
    project: str = Field(min_length=1, max_length=128, pattern=_NAME, description="W&B project.")
    entity: str | None = Field(None, min_length=1, max_length=128, pattern=_NAME, description="Team or user.")
    mode: Literal["offline", "online"] = Field(
        "offline",
        description=(
            "'online' syncs to W&B with the worker's WANDB_API_KEY; 'offline' writes the run under the job's "
            "output folder (sync it later with `wandb sync`)."
        ),
    )
    name: str | None = Field(
        None, min_length=1, max_length=128, pattern=_NAME, description="Run name; default: the job id."
    )
    tags: list[str] = Field(default_factory=list, max_length=MAX_TRACKING_TAGS, description="Run tags.")

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, value: list[str]) -> list[str]:
        if any(not tag or len(tag) > 64 or not re.fullmatch(_NAME, tag) for tag in value):
            raise ValueError("tags: 1-64 characters each, letters, digits and ' _.-/:'")
        return value


IntegrationConfig = Annotated[MlflowIntegration | WandbIntegration, Field(discriminator="type")]
