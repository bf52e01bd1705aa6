"""/v1/config/schema: the JSON Schema of a job's `config` (remix_engine TrainConfig)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from remix_engine.config import TrainConfig

router = APIRouter(prefix="/v1/config", tags=["jobs"])


@router.get("/schema")
def config_schema() -> dict[str, Any]:
    """Every hyperparameter with its type, bounds, default and description."""
    return TrainConfig.model_json_schema()
