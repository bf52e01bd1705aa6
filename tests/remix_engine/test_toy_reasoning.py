"""Tests of the builtin reasoning task (3-digit column addition) and the tiny reasoning model build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remix_engine.config import REASONING_DATASET_ID, TINY_REASONER_MODEL_ID, ModelConfig, TrainConfig
from remix_engine.model_shape import TINY_REASONER_MODEL_CONFIG, offline_model_config
from remix_engine.rewards import extract_boxed
from remix_engine.splits import load_train_eval
from remix_engine.toy import build_char_tokenizer, split_of
from remix_engine.toy_reasoning import (
    MAX_POSITIONS,
    build_tiny_reasoner,
    build_untrained_reasoner,
    read_tiny_reasoner_meta,
    reasoning_examples,
    sample_pairs,
    terse_completion,
    worked_completion,
)

# ------------------------------------------------------------------------------------------- task


def test_worked_answer_adds_column_by_column_with_carries_and_an_optional_check() -> None:
    assert worked_completion(347, 586, check=True) == (
        "7+6=13 carry 1\n4+8+1=13 carry 1\n3+5+1=9\ncheck: 3+5+1=9 ok\n\\boxed{933}"
    )
    assert worked_completion(999, 111, check=False) == (
        "9+1=10 carry 1\n9+1+1=11 carry 1\n9+1+1=11 carry 1\n\\boxed{1110}"
    )
    assert worked_completion(123, 456, check=False) == "3+6=9\n2+5=7\n1+4=5\n\\boxed{579}"
    assert terse_completion(347, 586) == "\\boxed{933}"


def test_every_worked_answer_boxes_the_sum_after_30_to_80_tokens_of_working() -> None:
    tokenizer = build_char_tokenizer(MAX_POSITIONS)
    lengths = []
    for a, b in sample_pairs("train", 300, seed=3):
        for check in (False, True):
            text = worked_completion(a, b, check=check)
            assert extract_boxed(text) == str(a + b)
            lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    assert 25 <= min(lengths) and max(lengths) <= 85
    assert 45 <= sum(lengths) / len(lengths) <= 65


def test_splits_are_disjoint_seeded_and_fixed_by_the_operands() -> None:
    train, held_out = sample_pairs("train", 2000, seed=0), sample_pairs("eval", 500, seed=0)
    assert not set(train) & set(held_out)
    assert {split_of(a, b) for a, b in held_out} == {"eval"}
    assert all(100 <= a <= 999 and 100 <= b <= 999 for a, b in train + held_out)
    assert sample_pairs("eval", 500, seed=0) == held_out
    assert sample_pairs("eval", 500, seed=1) != held_out
    with pytest.raises(ValueError, match="split must be"):
        sample_pairs("test", 1, seed=0)  # type: ignore[arg-type]


def test_a_job_on_the_builtin_reasoning_set_gets_its_problems() -> None:
    cfg = TrainConfig.model_validate({"data": {"train_path": REASONING_DATASET_ID, "eval_size": 50}})
    train, held_out = load_train_eval(cfg)
    assert len(held_out) == 50 and len(train) > 1000
    assert held_out == reasoning_examples("eval", 50, cfg.seed)
    for example in train[:20]:
        a, b = example.prompt.removesuffix("=").split("+")
        assert example.answer == str(int(a) + int(b)) and split_of(int(a), int(b)) == "train"


# ------------------------------------------------------------------------------------------ model


def test_the_api_knows_the_reasoners_shape_without_building_it(tmp_path: Path) -> None:
    tokenizer = build_char_tokenizer(MAX_POSITIONS)
    build_untrained_reasoner(tokenizer, seed=0).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key, value in TINY_REASONER_MODEL_CONFIG.items():  # what the API's pre-flight assumes without torch
        assert config[key] == value, key
    assert offline_model_config(ModelConfig(name_or_path=TINY_REASONER_MODEL_ID)) == TINY_REASONER_MODEL_CONFIG


@pytest.mark.slow
def test_build_reaches_partial_accuracy_writes_its_working_and_is_cached() -> None:
    """The shared cache's build (the one jobs load), re-measured through the rollout engine."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remix_engine.config import RolloutConfig
    from remix_engine.rollout import HFRolloutEngine

    model_dir = build_tiny_reasoner()
    meta = read_tiny_reasoner_meta(model_dir)
    assert 0.2 <= float(meta["eval_accuracy"]) <= 0.45
    assert 0.02 <= float(meta["sampled_accuracy"]) < float(meta["eval_accuracy"])
    assert 0.05 <= float(meta["sampled_terse_share"]) <= 0.6  # both styles are in the sampled repertoire
    assert float(meta["build_seconds"]) < 300

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = reasoning_examples("eval", 300, seed=5)
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=96, generation_batch_size=300))
    completions = engine.greedy([ex.prompt for ex in examples])
    correct = [extract_boxed(c) == ex.answer for c, ex in zip(completions, examples, strict=True)]
    assert 0.15 <= sum(correct) / len(correct) <= 0.5
    worked = [c for c in completions if "carry" in c or "\n" in c]
    assert len(worked) >= 0.5 * len(completions)
    assert 35 <= sum(len(c) for c in worked) / len(worked) <= 70  # characters are tokens here

    weights_mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_reasoner() == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime
