"""The job schema: defaults from the paper, validation errors that name the field, shipped configs."""

from pathlib import Path
from typing import get_args

import pytest
import yaml
from annotated_types import Le, Lt
from pydantic import BaseModel, ValidationError

from remix_engine.config import AlgorithmConfig, RewardConfig, TrainConfig

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
        assert alg.replay is replay and alg.advantage_estimator == estimator
        assert (alg.reincarnation_step is None) is (not replay)


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
    # several nodes: every process of every node needs a fresh group
    two_nodes = TrainConfig.model_validate({"distributed": {"num_nodes": 2, "num_processes": 4}})
    assert (two_nodes.distributed.world_size, TrainConfig().distributed.world_size) == (8, 1)
    with pytest.raises(ValidationError, match=r"num_nodes=2 x distributed.num_processes=2 needs at least 4 .*only 3"):
        TrainConfig.model_validate({"rollout": {"prompts_per_step": 5}, "distributed": {"num_nodes": 2, "num_processes": 2}})
    for nodes in (0, 17):
        with pytest.raises(ValidationError, match="num_nodes"):
            TrainConfig.model_validate({"distributed": {"num_nodes": nodes}})


# ----------------------------------------------------------------------------- strict types and bounds


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"total_steps": True}, "total_steps"),  # a bool is not an int (it used to be taken as 1)
        ({"seed": False}, "seed"),
        ({"rollout": {"group_size": "8"}}, "rollout.group_size"),  # strings are not numbers
        ({"rollout": {"max_new_tokens": 16.0}}, "rollout.max_new_tokens"),  # nor floats ints
        ({"optim": {"lr": True}}, "optim.lr"),  # floats take ints, never bools
        ({"optim": {"lr": "1e-6"}}, "optim.lr"),
        ({"optim": {"betas": [True, 0.999]}}, "optim.betas.0"),
        ({"algorithm": {"off_policy_fraction": "0.4"}}, "algorithm.off_policy_fraction"),
        ({"model": {"trust_remote_code": 1}}, "model.trust_remote_code"),  # an int is not a bool
        ({"lora": {"enabled": "yes"}}, "lora.enabled"),
        ({"reward": {"functions": [{"name": "format", "weight": "2"}]}}, "reward.functions.0.weight"),
        ({"reward": {"functions": [{"name": "format", "weight": float("inf")}]}}, "reward.functions.0.weight"),
        ({"optim": {"weight_decay": float("nan")}}, "optim.weight_decay"),
    ],
)
def test_types_are_strict_everywhere(patch, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(patch)
    assert [".".join(str(p) for p in e["loc"]) for e in info.value.errors()] == [field]


def test_yaml_lists_and_whole_numbers_for_floats_still_validate():
    cfg = TrainConfig.model_validate(
        yaml.safe_load("optim: {lr: 1, betas: [0.9, 0.95], weight_decay: 0}\nalgorithm: {kl_coef: 0}\n")
    )
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.lr == 1.0 and cfg.algorithm.kl_coef == 0.0
    # what the API stores (JSON) is what the worker validates again, in both of its ways
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    assert TrainConfig.model_validate_json(cfg.model_dump_json()) == cfg


def _int_fields(model=TrainConfig, prefix=""):
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _int_fields(annotation, f"{prefix}{name}.")
        elif annotation in (int, int | None):
            yield f"{prefix}{name}", info


def test_every_count_has_an_upper_bound():
    fields = dict(_int_fields())
    assert {"seed", "total_steps", "keep_checkpoints", "rollout.group_size", "rollout.top_k"} <= fields.keys()
    unbounded = [name for name, info in fields.items() if not any(isinstance(m, Le | Lt) for m in info.metadata)]
    assert unbounded == []


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("seed", 2**32 - 1),
        ("total_steps", 100_000),
        ("checkpoint_every", 100_000),
        ("keep_checkpoints", 100),
        ("keep_best_checkpoints", 100),
        ("log_completions", 64),
        ("data.eval_size", 100_000),
        ("rollout.prompts_per_step", 8192),
        ("rollout.group_size", 256),
        ("rollout.max_new_tokens", 65536),
        ("rollout.generation_batch_size", 65536),
        ("algorithm.minibatch_size", 65536),
    ],
)
def test_counts_stop_at_their_documented_bound(field, limit):
    def patch(value):
        *sections, knob = field.split(".")
        out = {knob: value}
        for section in reversed(sections):
            out = {section: out}
        # the largest rollout sizes need the on-policy baseline (no replay arithmetic)
        return {**out, "algorithm": {**out.get("algorithm", {}), "name": "grpo"}}

    TrainConfig.model_validate(patch(limit))
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(patch(limit + 1))
    assert [".".join(str(p) for p in e["loc"]) for e in info.value.errors()] == [field]


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        ({"top_p": 0.9}, "rollout.top_p"),
        ({"top_p": 0.999}, "rollout.top_p"),
        ({"top_k": 5}, "rollout.top_k"),
        ({"top_k": 2**20}, "rollout.top_k"),  # above any vocabulary: still a filter the learner never applies
        ({"backend": "vllm", "top_p": 0.9}, "rollout.top_p"),
    ],
)
def test_top_p_and_top_k_filters_are_refused_for_training_rollouts(rollout, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"rollout": rollout})
    errors = info.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == [field]
    assert "the learner scores every response under the whole tempered distribution" in errors[0]["msg"]
    unfiltered = TrainConfig.model_validate({"rollout": {"top_p": 1.0, "top_k": 0}}).rollout
    assert (unfiltered.top_p, unfiltered.top_k) == (1.0, 0)


@pytest.mark.parametrize("temperature", [0.005, 0.0099, 2.01, 10.0])
def test_the_vllm_backend_refuses_temperatures_vllm_would_change_or_refuse(temperature):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"rollout": {"backend": "vllm", "temperature": temperature}})
    errors = info.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == ["rollout.temperature"]
    assert "raises temperatures below 0.01 to 0.01" in errors[0]["msg"]
    TrainConfig.model_validate({"rollout": {"backend": "hf", "temperature": temperature}})  # HF samples exactly


def test_the_vllm_backend_takes_the_edges_of_its_range_and_checks_the_sampled_eval_temperature():
    for edge in (0.01, 2.0):
        cfg = TrainConfig.model_validate({"rollout": {"backend": "vllm", "temperature": edge}})
        assert cfg.rollout.temperature == edge
    vllm = {"rollout": {"backend": "vllm"}}
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({**vllm, "eval_samples": 4, "eval_temperature": 0.001})
    assert [e["loc"] for e in info.value.errors()] == [("eval_temperature",)]
    TrainConfig.model_validate({**vllm, "eval_samples": 0, "eval_temperature": 0.001})  # greedy evaluation only
    TrainConfig.model_validate({"eval_samples": 4, "eval_temperature": 0.001})  # the HF backend


def test_the_largest_seed_seeds_every_generator_the_engine_uses():
    import random

    import numpy
    import torch

    from remix_engine.sampling import PromptSampler

    seed = TrainConfig.model_validate({"seed": 2**32 - 1}).seed
    random.seed(seed)
    torch.manual_seed(seed)
    torch.Generator().manual_seed(seed)
    numpy.random.seed(seed)  # vLLM seeds numpy with the job's seed
    sampler = PromptSampler(10, seed)
    assert sorted(sampler.take(10)) == list(range(10)) and len(sampler.take(15)) == 15  # reshuffles
    with pytest.raises(ValueError):
        numpy.random.seed(seed + 1)  # why the bound is 2**32 - 1
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"seed": 2**64})


# ----------------------------------------------------------------------------- reward kwargs


@pytest.mark.parametrize(
    ("reward", "field", "message"),
    [
        ({"name": "regex", "kwargs": {"pattern": "("}}, "kwargs.pattern", "RE2 cannot compile the pattern: missing )"),
        ({"name": "regex"}, "kwargs.pattern", "Field required"),
        ({"name": "regex", "kwargs": {"pattern": ""}}, "kwargs.pattern", "at least 1 character"),
        ({"name": "regex", "kwargs": {"pattern": r"(a)\1"}}, "kwargs.pattern", "invalid escape sequence"),
        ({"name": "regex", "kwargs": {"pattern": "(?=a)a"}}, "kwargs.pattern", "invalid perl operator"),
        ({"name": "regex", "kwargs": {"pattern": "a" * 1025}}, "kwargs.pattern", "at most 1024 characters"),
        ({"name": "regex", "kwargs": {"pattern": 7}}, "kwargs.pattern", "valid string"),
        ({"name": "regex", "kwargs": {"pattern": "a", "target": "answer"}}, "kwargs.target", "'boxed' or"),
        ({"name": "regex", "kwargs": {"pattern": "a", "flags": 2}}, "kwargs.flags", "Extra inputs"),
        ({"name": "math_verify", "kwargs": {"pattern": "a"}}, "kwargs.pattern", "Extra inputs"),
        ({"name": "exact_match", "kwargs": {"strict": True}}, "kwargs.strict", "Extra inputs"),
        ({"name": "format", "kwargs": {"x": 1}}, "kwargs.x", "Extra inputs"),
        ({"name": "python", "kwargs": {}}, "kwargs", "python reward needs kwargs.code"),
        ({"name": "string_check"}, "kwargs.operation", "Field required"),
        ({"name": "string_check", "kwargs": {"operation": "like"}}, "kwargs.operation", "'eq', 'ne', 'contains'"),
        (
            {"name": "string_check", "kwargs": {"operation": "eq", "field": "label", "reference": "x"}},
            "kwargs",
            "either 'field'",
        ),
        ({"name": "string_check", "kwargs": {"operation": "eq", "field": ""}}, "kwargs.field", "at least 1"),
        ({"name": "string_check", "kwargs": {"operation": "eq", "target": "x"}}, "kwargs.target", "'completion'"),
        ({"name": "judge"}, "kwargs.rubric", "Field required"),
        ({"name": "judge", "kwargs": {"rubric": "Rate {answer}"}}, "kwargs.rubric", "{completion}"),
        ({"name": "judge", "kwargs": {"rubric": "{completion}" * 17}}, "kwargs.rubric", "17 placeholders; at most 16"),
        ({"name": "judge", "kwargs": {"rubric": "{completion}", "timeout_s": 0}}, "kwargs.timeout_s", "greater"),
        ({"name": "judge", "kwargs": {"rubric": "{completion}", "max_tokens": 10**6}}, "kwargs.max_tokens", "8192"),
        # The endpoint is the operator's: a job can never name the URL a worker calls (SSRF).
        ({"name": "judge", "kwargs": {"rubric": "{completion}", "url": "http://10.0.0.1/"}}, "kwargs.url", "Extra"),
        ({"name": "judge", "kwargs": {"rubric": "{completion}", "model": "x"}}, "kwargs.model", "Extra"),
    ],
)
def test_reward_kwargs_are_checked_against_what_each_reward_takes(reward, field, message):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"reward": {"functions": [{"name": "exact_match"}, reward]}})
    errors = info.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == [f"reward.functions.1.{field}"]
    assert message in errors[0]["msg"]


def test_every_reward_declares_its_kwargs_and_valid_ones_run():
    from remix_engine.config import RewardName
    from remix_engine.reward_specs import REWARD_KINDS, REWARD_NAMES
    from remix_engine.rewards import REWARDS

    # One registry of names: the config's Literal is built from it, and each name has an implementation.
    assert get_args(RewardName) == REWARD_NAMES == tuple(REWARD_KINDS)
    assert set(REWARD_NAMES) == set(REWARDS.names())
    assert all(kind.kwargs is not None or kind.check is not None for kind in REWARD_KINDS.values())
    schema = TrainConfig.model_json_schema()["$defs"]["RewardSpec"]["properties"]["name"]
    assert schema["enum"] == list(REWARD_NAMES)
    cfg = TrainConfig.model_validate(
        {
            "reward": {
                "functions": [
                    {"name": "regex", "kwargs": {"pattern": r"\d+", "target": "boxed"}},
                    {"name": "regex", "kwargs": {"pattern": "x[0-9]{2}", "target": "completion"}},
                    {"name": "math_verify"},
                ]
            }
        }
    )
    first, second, _ = cfg.reward.functions
    assert REWARDS.get(first.name)(["\\boxed{42}", "\\boxed{4a}"], ["", ""], **first.kwargs) == [1.0, 0.0]
    assert REWARDS.get(second.name)(["a x12 b", "x1"], ["", ""], **second.kwargs) == [1.0, 0.0]
    valid = [
        {"name": "string_check", "kwargs": {"operation": "ilike", "field": "label", "target": "boxed"}},
        {"name": "string_check", "kwargs": {"operation": "ne", "reference": "I don't know"}},
        {"name": "judge", "kwargs": {"rubric": "Q: {prompt} A: {completion} ({answer}) \\boxed{}", "timeout_s": 5}},
        {"name": "python", "kwargs": {"code": "def reward(completion, answer, row):\n    return 1.0\n"}},
    ]
    names = [spec.name for spec in RewardConfig.model_validate({"functions": valid}).functions]
    assert names == ["string_check", "string_check", "judge", "python"]


# The algorithm's parts: presets, overrides, refusals and configs stored before the parts were fields.
PRESET_PARTS = {
    "remix-grpo": ("grpo", "mix_ppg", True, 50),
    "remix-ppo": ("gae", "mix_ppg", True, 50),
    "grpo": ("grpo", "ppo_clip", False, None),
    "ppo": ("gae", "ppo_clip", False, None),
}


def _parts(alg: AlgorithmConfig) -> tuple:
    return (alg.advantage_estimator, alg.policy_loss, alg.replay, alg.reincarnation_step)


@pytest.mark.parametrize("name", sorted(PRESET_PARTS))
def test_each_preset_expands_to_its_parts(name):
    alg = TrainConfig.model_validate({"algorithm": {"name": name}}).algorithm
    assert _parts(alg) == PRESET_PARTS[name]
    dumped = alg.model_dump()
    assert (dumped["advantage_estimator"], dumped["policy_loss"], dumped["replay"], dumped["reincarnation_step"]) == (
        PRESET_PARTS[name]
    )


def test_the_default_algorithm_is_the_remix_grpo_preset():
    assert _parts(AlgorithmConfig()) == PRESET_PARTS["remix-grpo"] == _parts(TrainConfig().algorithm)


@pytest.mark.parametrize(
    ("algorithm", "parts"),
    [
        ({"name": "remix-grpo", "reincarnation_step": None}, ("grpo", "mix_ppg", True, None)),  # no reincarnation
        ({"name": "remix-grpo", "reincarnation_step": 7}, ("grpo", "mix_ppg", True, 7)),
        ({"name": "remix-grpo", "advantage_estimator": "gae"}, ("gae", "mix_ppg", True, 50)),
        ({"name": "remix-grpo", "replay": False}, ("grpo", "mix_ppg", False, None)),  # the preset's T needs replay
        ({"name": "grpo", "policy_loss": "mix_ppg"}, ("grpo", "mix_ppg", False, None)),
        ({"name": "grpo", "replay": True, "policy_loss": "mix_ppg"}, ("grpo", "mix_ppg", True, None)),
        ({"name": "ppo", "advantage_estimator": "grpo"}, ("grpo", "ppo_clip", False, None)),
        ({"advantage_estimator": "gae"}, ("gae", "mix_ppg", True, 50)),  # no name: the remix-grpo preset
    ],
)
def test_parts_set_in_the_config_override_the_preset(algorithm, parts):
    assert _parts(TrainConfig.model_validate({"algorithm": algorithm}).algorithm) == parts


def test_the_engine_reads_the_parts_not_the_name():
    # A preset name with every part overridden trains exactly as the preset the parts spell.
    spelled = AlgorithmConfig(name="grpo", advantage_estimator="gae", policy_loss="mix_ppg", replay=True)
    assert _parts(spelled) == ("gae", "mix_ppg", True, None)
    on_policy_remix = AlgorithmConfig(name="remix-grpo", replay=False, policy_loss="ppo_clip")
    assert _parts(on_policy_remix) == _parts(AlgorithmConfig(name="grpo"))


@pytest.mark.parametrize(
    ("part", "value", "valid"),
    [("advantage_estimator", "vtrace", "'gae' or 'grpo'"), ("policy_loss", "dpo", "'mix_ppg' or 'ppo_clip'")],
)
def test_an_unknown_part_is_refused_naming_the_field_and_the_valid_keys(part, value, valid):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"algorithm": {part: value}})
    errors = info.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == [f"algorithm.{part}"]
    assert valid in errors[0]["msg"]


@pytest.mark.parametrize(
    ("algorithm", "field", "reason"),
    [
        ({"replay": True, "policy_loss": "ppo_clip"}, "algorithm.policy_loss", "cannot train replayed rollouts"),
        ({"name": "grpo", "replay": True}, "algorithm.policy_loss", "use policy_loss 'mix_ppg' or replay false"),
        ({"replay": False, "reincarnation_step": 10}, "algorithm.reincarnation_step", "needs algorithm.replay true"),
        ({"name": "ppo", "replay": False, "reincarnation_step": 0}, "algorithm.reincarnation_step", "set reincarnation_step null"),
    ],
)
def test_incoherent_parts_are_refused_naming_the_field(algorithm, field, reason):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"algorithm": algorithm})
    (error,) = info.value.errors()
    assert error["loc"] == ("algorithm",) and field in error["msg"] and reason in error["msg"]


def test_strict_types_hold_for_the_parts():
    for bad in ({"replay": 1}, {"replay": "true"}, {"advantage_estimator": 1}, {"name": ["grpo"]}):
        with pytest.raises(ValidationError):
            AlgorithmConfig.model_validate(bad)


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": name, **extra}
        for name in sorted(PRESET_PARTS)
        for extra in ({}, {"reincarnation_step": None}, {"advantage_estimator": "gae"}, {"policy_loss": "mix_ppg"})
    ]
    + [{"name": "remix-ppo", "replay": False}, {"name": "grpo", "replay": True, "policy_loss": "mix_ppg"}],
)
def test_the_parts_survive_a_round_trip_through_model_dump(algorithm):
    cfg = TrainConfig.model_validate({"algorithm": algorithm})
    for mode in ("python", "json"):
        again = TrainConfig.model_validate(cfg.model_dump(mode=mode))
        assert again == cfg and again.model_dump(mode=mode) == cfg.model_dump(mode=mode)


# Every field of `algorithm` a stored config (model_dump) has held since the first schema, before the
# parts were fields: the service stores and the worker reads such dumps, and checkpoints hold them.
STORED_BEFORE_PARTS = {
    "off_policy_fraction": 0.4,
    "history_window": 2,
    "utd_ratio": 2,
    "reincarnation_step": 50,
    "clip_eps": 0.2,
    "kl_coef": 0.001,
    "kl_estimator": "k3",
    "lambda_start_step": 50,
    "lambda_interval": 10,
    "lambda_decay": 0.1,
    "lambda_min": 0.5,
    "entropy_coef": 0.001,
    "loss_aggregation": "token-mean",
    "ppo_epochs": 1,
    "minibatch_size": 512,
    "log_inactive_kl": True,
    "reset_optimizer_on_reincarnation": True,
    "gae_gamma": 1.0,
    "gae_lambda": 1.0,
    "value_clip": 0.2,
    "value_coef": 0.5,
}


@pytest.mark.parametrize("name", sorted(PRESET_PARTS))
def test_a_config_stored_before_the_parts_were_fields_keeps_its_behaviour(name):
    # Then: replay iff name starts with remix-, gae iff it ends with ppo, mix_ppg iff replay, and the
    # baselines never reincarnated whatever reincarnation_step held.
    replay = name.startswith("remix-")
    before = ("gae" if name.endswith("ppo") else "grpo", "mix_ppg" if replay else "ppo_clip", replay)
    only_the_name = AlgorithmConfig.model_validate({"name": name})
    stored = AlgorithmConfig.model_validate({"name": name, **STORED_BEFORE_PARTS})
    stored_t7 = AlgorithmConfig.model_validate({"name": name, **STORED_BEFORE_PARTS, "reincarnation_step": 7})
    for alg, t in ((only_the_name, 50), (stored, 50), (stored_t7, 7)):
        assert _parts(alg) == (*before, t if replay else None)
