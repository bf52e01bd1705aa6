"""`integrations` of a TrainConfig: strict tracker entries told apart by `type`, and the local-store rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from remix_engine.config import (
    MAX_INTEGRATIONS,
    LocalTrackingRefused,
    MlflowIntegration,
    TrainConfig,
    WandbIntegration,
    check_tracking_uri,
)


def _error_fields(integrations) -> list[str]:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"integrations": integrations})
    return [".".join(str(part) for part in error["loc"]) for error in info.value.errors()]


def test_entries_are_parsed_by_type_and_survive_the_stored_json():
    config = TrainConfig.model_validate(
        {
            "integrations": [
                {"type": "mlflow", "tracking_uri": "http://mlflow:5000", "tags": {"team": "rl"}},
                {"type": "wandb", "project": "remix", "entity": "lab", "mode": "online", "tags": ["v1"]},
            ]
        }
    )
    mlflow, wandb = config.integrations
    assert isinstance(mlflow, MlflowIntegration) and mlflow.experiment_name == "remix" and mlflow.run_name is None
    assert isinstance(wandb, WandbIntegration) and (wandb.entity, wandb.mode) == ("lab", "online")
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config
    assert TrainConfig().integrations == [] and WandbIntegration(type="wandb", project="p").mode == "offline"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"type": "comet", "project": "p"}, "integrations.0"),
        ({"project": "p"}, "integrations.0"),
        ({"type": "wandb"}, "integrations.0.wandb.project"),
        ({"type": "wandb", "project": "p", "api_key": "k"}, "integrations.0.wandb.api_key"),
        ({"type": "wandb", "project": "p", "mode": "disabled"}, "integrations.0.wandb.mode"),
        ({"type": "wandb", "project": "p", "tags": ["has\nnewline"]}, "integrations.0.wandb.tags"),
        ({"type": "wandb", "project": "../escape"}, "integrations.0.wandb.project"),
        ({"type": "mlflow", "tracking_uri": ""}, "integrations.0.mlflow.tracking_uri"),
        ({"type": "mlflow", "tracking_uri": "http://"}, "integrations.0.mlflow.tracking_uri"),
        ({"type": "mlflow", "tracking_uri": "https://u:pw@mlflow.example.com"}, "integrations.0.mlflow.tracking_uri"),
        ({"type": "mlflow", "tracking_uri": "gopher://host"}, "integrations.0.mlflow.tracking_uri"),
        ({"type": "mlflow", "tracking_uri": "http://h", "tags": {"k": 1}}, "integrations.0.mlflow.tags.k"),
    ],
)
def test_a_bad_entry_is_refused_naming_its_field(entry, field):
    assert _error_fields([entry]) == [field]


def test_at_most_four_trackers():
    entry = {"type": "wandb", "project": "p"}
    TrainConfig.model_validate({"integrations": [entry] * MAX_INTEGRATIONS})
    assert _error_fields([entry] * (MAX_INTEGRATIONS + 1)) == ["integrations"]


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "sqlite:///mlflow.db", "/srv/mlruns", "postgresql://db/mlflow"])
def test_local_stores_need_the_operators_permission(uri):
    with pytest.raises(LocalTrackingRefused, match="REMIX_TRACKING_ALLOW_LOCAL"):
        check_tracking_uri(uri, allow_local=False)
    check_tracking_uri(uri, allow_local=True)
    check_tracking_uri("https://mlflow.example.com", allow_local=False)
