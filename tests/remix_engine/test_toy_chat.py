"""The builtin chat model `builtin:tiny-chat` (remix_engine/toy_chat.py): its structure is the Qwen2.5-Instruct
stand-in's, its prompts are what a job with `chat_template: auto` renders, pretraining on a shared prefix is
the same computation as on whole rows, and the cached build reaches partial accuracy and loads as a policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from remix_engine.config import TINY_CHAT_MODEL_ID, DataConfig, ModelConfig
from remix_engine.data import Example
from remix_engine.model_shape import TINY_CHAT_MODEL_CONFIG, ModelShape, load_model_config, offline_model_config
from remix_engine.prompts import PromptSet
from remix_engine.standins import QWEN25_CHAT_TEMPLATE, QWEN_DEFAULT_SYSTEM_PROMPT
from remix_engine.toy import addition_pairs, format_prompt
from remix_engine.toy_chat import (
    COMPLETION_TOKENS,
    META_FILENAME,
    _encode,
    _sft_step,
    build_tiny_chat_model,
    build_untrained_chat_model,
    chat_prompts,
    greedy_accuracy,
    question_prompt,
    read_tiny_chat_model_meta,
    shared_prefix,
)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_untrained_chat_model(tmp_path_factory.mktemp("untrained-chat"), seed=0)
    return folder, AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_the_model_is_a_qwen2_chat_model_with_the_preflights_shape(untrained) -> None:
    folder, model, tokenizer = untrained
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tokenizer.chat_template == QWEN25_CHAT_TEMPLATE
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    config = json.loads((folder / "config.json").read_text())
    for key, value in TINY_CHAT_MODEL_CONFIG.items():  # what the API's pre-flight assumes without torch
        assert config[key] == value, key
    assert 0.6e6 < sum(p.numel() for p in model.parameters()) < 0.9e6


def test_its_prompts_are_what_a_job_with_chat_template_auto_renders(untrained) -> None:
    _folder, _model, tokenizer = untrained
    turns = [format_prompt(12, 34), question_prompt(12, 34)]
    rendered = PromptSet(tokenizer, DataConfig(chat_template="auto")).render([Example(t, "46") for t in turns])
    assert rendered == chat_prompts(tokenizer, turns)
    assert rendered[0] == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n12+34=<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # the longest completion fits the greedy budget: "\boxed{198}" and <|im_end|>
    assert len(tokenizer("\\boxed{198}", add_special_tokens=False)["input_ids"]) + 1 <= COMPLETION_TOKENS


def test_pretraining_on_the_shared_prefix_is_the_same_as_on_whole_rows(untrained) -> None:
    _folder, model, tokenizer = untrained
    pairs = addition_pairs("train")[:6]
    turns = [question_prompt(a, b) if i % 2 else format_prompt(a, b) for i, (a, b) in enumerate(pairs)]
    prompts = chat_prompts(tokenizer, turns)
    prefix = shared_prefix(tokenizer, prompts)
    assert prefix.endswith("<|im_start|>user\n") and all(p.startswith(prefix) for p in prompts)
    prefix_ids, ids, mask = _encode(tokenizer, prompts, [str(a + b) for a, b in pairs])

    # the loss of a whole-row forward, on the completion tokens only
    whole = torch.cat([prefix_ids.expand(len(pairs), -1), ids], dim=1)
    whole_mask = torch.cat([torch.zeros_like(prefix_ids.expand(len(pairs), -1), dtype=torch.bool), mask], dim=1)
    logits = model(input_ids=whole).logits[:, :-1]
    expected = torch.nn.functional.cross_entropy(logits[whole_mask[:, 1:]], whole[:, 1:][whole_mask[:, 1:]])

    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    try:
        loss = _sft_step(model, optimizer, prefix_ids, ids, mask, lr=0.0)
    finally:
        model.load_state_dict(state)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_an_untrained_model_solves_nothing(untrained) -> None:
    _folder, model, tokenizer = untrained
    assert greedy_accuracy(model, tokenizer, addition_pairs("eval")[:16]) == 0.0


def test_the_preflight_knows_the_builtin_chat_model_without_torch() -> None:
    model = ModelConfig(name_or_path=TINY_CHAT_MODEL_ID)
    assert offline_model_config(model) == TINY_CHAT_MODEL_CONFIG
    # and the worker's pre-flight (a transformers config, no build) sees the same shape
    assert ModelShape.from_config(load_model_config(model)) == ModelShape.from_dict(TINY_CHAT_MODEL_CONFIG)


@pytest.mark.slow
def test_the_cached_build_reaches_partial_accuracy_and_loads_as_a_policy() -> None:
    from remix_engine.modeling import load_policy

    folder = build_tiny_chat_model()  # cached in REMIX_CACHE_DIR (about 1.5 minutes of one core the first time)
    assert (folder / META_FILENAME).is_file()
    meta = read_tiny_chat_model_meta(folder)
    assert 0.25 <= meta["eval_accuracy"] <= 0.65, meta  # room for reinforcement finetuning to raise it
    assert 0.15 <= meta["eval_accuracy_question"] <= 0.75, meta
    assert meta["architecture"] == "Qwen2ForCausalLM"
    model, tokenizer = load_policy(ModelConfig(name_or_path=TINY_CHAT_MODEL_ID))
    assert Path(tokenizer.name_or_path) == folder and tokenizer.padding_side == "left"
    assert tokenizer.chat_template == QWEN25_CHAT_TEMPLATE
    sample = addition_pairs("eval")[:100]
    assert greedy_accuracy(model, tokenizer, sample) == pytest.approx(meta["eval_accuracy"], abs=0.2)
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    assert model.generation_config.eos_token_id == stops
