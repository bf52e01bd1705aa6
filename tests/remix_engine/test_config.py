"""The job schema: defaults from the paper, validation errors that name the field, shipped configs."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from remix_engine.config import AlgorithmConfig, TrainConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_paper_defaults():
    alg = TrainConfig().algorithm
    assert (alg.off_policy_fraction, alg.history_window, alg.utd_ratio, alg.reincarnation_step) == (
        0.4,
        2,
        2,
        50,
    )
    assert (alg.clip_eps, alg.kl_coef, alg.kl_estimator, alg.entropy_coef) == (0.2, 0.001, "k3", 0.001)
    assert alg.loss_aggregation == "token-mean"


@pytest.mark.parametrize(
    ("step", "lam"),
    [(1, 1.0), (50, 1.0), (51, 0.9), (60, 0.9), (61, 0.8), (81, 0.6), (90, 0.6), (91, 0.5), (500, 0.5)],
)
def test_lambda_schedule(step, lam):
    assert AlgorithmConfig().lambda_at(step) == pytest.approx(lam)


def test_baselines_turn_replay_and_reincarnation_off():
    for name, replay, estimator in [
        ("grpo", False, "grpo"),
        ("ppo", False, "gae"),
        ("remix-grpo", True, "grpo"),
        ("remix-ppo", True, "gae"),
    ]:
        alg = AlgorithmConfig(name=name)
        assert alg.uses_replay is replay and alg.advantage_estimator == estimator
        assert (alg.effective_reincarnation_step is None) is (not replay)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"algorithm": {"off_policy_fraction": 1.0}}, "algorithm.off_policy_fraction"),
        ({"algorithm": {"off_policy_fraction": -0.1}}, "algorithm.off_policy_fraction"),
        ({"algorithm": {"history_window": 0}}, "algorithm.history_window"),
        ({"algorithm": {"reincarnation_step": -1}}, "algorithm.reincarnation_step"),
        ({"algorithm": {"name": "dpo"}}, "algorithm.name"),
        ({"rollout": {"temperature": 0}}, "rollout.temperature"),
        ({"data": {"prompt_template": "no placeholder"}}, "data.prompt_template"),
        ({"optim": {"betas": [0.9, 1.5]}}, "optim.betas"),
        ({"algorithm": {"unknown_knob": 1}}, "algorithm.unknown_knob"),
    ],
)
def test_invalid_values_name_the_field(patch, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(patch)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert field in locs


def test_cross_field_checks_explain_themselves():
    with pytest.raises(ValidationError, match="group_size must be >= 2"):
        TrainConfig.model_validate({"rollout": {"group_size": 1}})
    with pytest.raises(ValidationError, match="no fresh prompt"):
        TrainConfig.model_validate({"rollout": {"prompts_per_step": 1}, "algorithm": {"off_policy_fraction": 0.9}})
    TrainConfig.model_validate({"rollout": {"group_size": 1}, "algorithm": {"name": "ppo"}})


def test_every_shipped_config_validates():
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        TrainConfig.model_validate(yaml.safe_load(path.read_text()))


def test_json_round_trip_is_lossless():
    cfg = TrainConfig.model_validate({"algorithm": {"name": "remix-ppo", "reincarnation_step": None}})
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_processes_and_vllm_options_have_safe_defaults_and_bounds():
    cfg = TrainConfig()
    assert cfg.distributed.num_processes == 1
    assert (cfg.rollout.vllm.gpu_memory_utilization, cfg.rollout.vllm.enable_sleep_mode) == (0.3, True)
    assert cfg.fewest_fresh_groups == 64 - round(0.4 * 64)  # replay takes the rest of the step
    assert TrainConfig.model_validate({"algorithm": {"name": "grpo"}}).fewest_fresh_groups == 64
    bad_values = ({"distributed": {"num_processes": 0}}, {"rollout": {"vllm": {"gpu_memory_utilization": 1}}})
    for bad in bad_values:
        with pytest.raises(ValidationError):
            TrainConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="num_processes=4 needs at least 4 fresh prompt groups.*only 3"):
        TrainConfig.model_validate({"rollout": {"prompts_per_step": 5}, "distributed": {"num_processes": 4}})
    assert (
        TrainConfig.model_validate(
            {"rollout": {"prompts_per_step": 5}, "distributed": {"num_processes": 3}}
        ).distributed.num_processes
        == 3
    )
