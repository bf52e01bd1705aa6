"""Tests of the builtin addition task, the character tokenizer and the tiny model build (its cache: test_cache.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from remix_engine.data import Example
from remix_engine.toy import (
    META_FILENAME,
    addition_pairs,
    build_char_tokenizer,
    build_tiny_model,
    build_untrained_model,
    format_completion,
    read_tiny_model_meta,
    toy_examples,
)

# ----------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    "text",
    [
        "12+34=",
        "\\boxed{46}",
        " two  spaces, punctuation!? ",
        "line one\n\tline two",
        "".join(map(chr, range(32, 127))),
    ],
)
def test_tokenizer_round_trips_text_one_token_per_character(text: str) -> None:
    tokenizer = build_char_tokenizer()
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # <bos> is prepended
    assert len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_tokenizer_maps_unknown_characters_to_unk() -> None:
    tokenizer = build_char_tokenizer()
    ids = tokenizer("a\u00e9b", add_special_tokens=False)["input_ids"]
    assert ids[1] == tokenizer.unk_token_id
    assert len(ids) == 3


def test_tokenizer_survives_save_and_autotokenizer_load(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "What is 12+34? \\boxed{46}"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert loaded.padding_side == "left"
    batch = loaded(["1+1=", "12+34="], padding=True)
    assert batch["input_ids"][0][:2] == [loaded.pad_token_id] * 2  # shorter prompt padded on the left
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------- task


def test_toy_examples_are_correct_additions() -> None:
    examples = toy_examples("train", 50, seed=3)
    assert len(examples) == 50
    for example in examples:
        assert isinstance(example, Example)
        left, right = example.prompt.removesuffix("=").split("+")
        assert example.prompt.endswith("=")
        assert 10 <= int(left) <= 99 and 10 <= int(right) <= 99
        assert example.answer == str(int(left) + int(right))


def test_toy_examples_are_deterministic_per_seed() -> None:
    assert toy_examples("eval", 30, seed=1) == toy_examples("eval", 30, seed=1)
    assert toy_examples("eval", 30, seed=1) != toy_examples("eval", 30, seed=2)


def test_train_and_eval_splits_are_disjoint_and_cover_all_pairs() -> None:
    train, held_out = set(addition_pairs("train")), set(addition_pairs("eval"))
    assert not train & held_out
    assert len(train) + len(held_out) == 90 * 90
    assert 0.05 < len(held_out) / (90 * 90) < 0.15
    eval_prompts = {ex.prompt for ex in toy_examples("eval", 300, seed=0)}
    train_prompts = {ex.prompt for ex in toy_examples("train", 3000, seed=0)}
    assert not eval_prompts & train_prompts


def test_toy_examples_cycle_when_more_than_the_split_is_requested() -> None:
    size = len(addition_pairs("eval"))
    examples = toy_examples("eval", size + 10, seed=0)
    assert len(examples) == size + 10
    assert len({ex.prompt for ex in examples[:size]}) == size  # one full pass without repeats first


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        toy_examples("test", 5, seed=0)  # type: ignore[arg-type]


def test_untrained_model_is_deterministic_from_its_seed() -> None:
    tokenizer = build_char_tokenizer()
    first, again, other = (build_untrained_model(tokenizer, seed) for seed in (0, 0, 1))
    for a, b in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.model.layers[0].mlp.up_proj.weight, other.model.layers[0].mlp.up_proj.weight)
    assert 500_000 < sum(p.numel() for p in first.parameters()) < 1_500_000


# ------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_build_tiny_model_reaches_moderate_accuracy_and_is_cached(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remix_engine.config import RolloutConfig
    from remix_engine.rollout import HFRolloutEngine

    model_dir = build_tiny_model(tmp_path, seed=0)
    meta = read_tiny_model_meta(model_dir)
    assert 0.2 <= meta["eval_accuracy"] <= 0.6
    assert model_dir.parent == tmp_path and model_dir.name.endswith("-seed0")

    # The directory is a plain Hugging Face model folder; re-measure accuracy through the rollout engine.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = toy_examples("eval", len(addition_pairs("eval")), seed=0)
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=16, generation_batch_size=256))
    completions = engine.greedy([ex.prompt for ex in examples])
    accuracy = sum(c == format_completion(ex.answer) for c, ex in zip(completions, examples, strict=True)) / len(
        examples
    )
    assert 0.2 <= accuracy <= 0.6
    assert abs(accuracy - meta["eval_accuracy"]) <= 0.02  # same model, KV-cached vs uncached decoding

    weights_mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    meta_mtime = (model_dir / META_FILENAME).stat().st_mtime_ns
    assert build_tiny_model(tmp_path, seed=0) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert (model_dir / META_FILENAME).stat().st_mtime_ns == meta_mtime
