"""The job's prompts as the model sees them: rendered once with the chat template, measured in tokens,
overlong ones dropped (and reported) or refused, never truncated; rewards read a completion after an
open <think> as the model wrote it."""

from __future__ import annotations

import json
import shutil

import pytest
from test_chat_format import CHATML, R1_LIKE
from test_trainer import Recorder

from remix_engine.config import DataConfig, TrainConfig
from remix_engine.data import Example
from remix_engine.prompts import OverlongPromptsError, PromptSet, completions_for_rewards
from remix_engine.rewards import REWARDS
from remix_engine.toy import build_char_tokenizer
from remix_engine.trainer import Trainer

SHORT, LONG = Example(prompt="1+1=", answer="2"), Example(prompt="9" * 40 + "+1=", answer="1" + "0" * 40)


def test_overlong_prompts_are_dropped_and_counted() -> None:
    prompts = PromptSet(build_char_tokenizer(), DataConfig(chat_template="none", max_prompt_tokens=10))
    kept, texts = prompts.prepare([SHORT, LONG, SHORT], "training")
    assert kept == [SHORT, SHORT] and texts == ["1+1=", "1+1="]
    assert prompts.dropped == {"training": 1}


def test_overlong_prompts_fail_the_job_under_error_and_when_nothing_fits() -> None:
    tokenizer = build_char_tokenizer()
    strict = PromptSet(tokenizer, DataConfig(chat_template="none", max_prompt_tokens=10, overlong_prompts="error"))
    with pytest.raises(OverlongPromptsError, match=r"1 of 2 training prompts are longer than .*=10 \(the longest has 44 tokens\)"):
        strict.prepare([SHORT, LONG], "training")
    tight = PromptSet(tokenizer, DataConfig(chat_template="none", max_prompt_tokens=2))
    with pytest.raises(OverlongPromptsError, match="2 of 2 evaluation prompts.*raise max_prompt_tokens"):
        tight.prepare([SHORT, SHORT], "evaluation")


def test_the_chat_template_counts_towards_the_limit() -> None:
    tokenizer = build_char_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    # "1+1=" is 5 tokens with <bos>; inside ChatML (user turn + assistant header) it is 24.
    fits_plain = PromptSet(tokenizer, DataConfig(chat_template="none", max_prompt_tokens=20))
    assert fits_plain.prepare([SHORT], "training")[0] == [SHORT]
    with_template = PromptSet(tokenizer, DataConfig(chat_template="auto", max_prompt_tokens=20))
    with pytest.raises(OverlongPromptsError, match="the longest has 2[0-9] tokens with the chat template"):
        with_template.prepare([SHORT], "training")


def test_rewards_read_a_completion_after_an_open_think_as_written() -> None:
    math_verify = REWARDS.get("math_verify")
    prompt = "<|User|>2+3=<|Assistant|><think>\n"
    # R1-style output: reasoning (with a tentative box), </think>, then the answer.
    completion = "maybe \\boxed{4}? no.</think>The answer is \\boxed{5}."
    seen = completions_for_rewards([prompt, "2+3="], [completion, completion])
    assert seen[0] == "<think>" + completion and seen[1] == completion
    assert math_verify(seen, ["4", "4"]) == [0.0, 0.0]  # the reasoning's box is not the answer
    assert math_verify(seen, ["5", "5"]) == [1.0, 1.0]


@pytest.fixture
def chat_model_dir(random_model_dir, tmp_path):
    """The random tiny Llama with chat special tokens and an R1-style template (opens <think>)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "chat-model"
    shutil.copytree(random_model_dir, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|User|>", "<|Assistant|>"]})
    tokenizer.chat_template = R1_LIKE
    tokenizer.save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(path)
    return path


def test_a_job_on_chat_rows_trains_on_templated_prompts_and_reports_dropped_ones(chat_model_dir, tmp_path):
    # given OpenAI-style chat rows (one far too long) and a model whose template opens <think>
    rows = [{"messages": [{"role": "system", "content": "Add."}, {"role": "user", "content": f"{i}+{i}="}],
             "answer": str(2 * i)} for i in range(6)]  # fmt: skip
    rows.append({"messages": [{"role": "user", "content": "1+" * 200 + "1="}], "answer": "201"})
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig.model_validate(
        {
            "model": {"name_or_path": str(chat_model_dir)},
            "data": {"train_path": str(data), "eval_size": 2, "max_prompt_tokens": 64},
            "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4},
            "algorithm": {"name": "grpo", "minibatch_size": 4},
            "total_steps": 1,
            "log_completions": 2,
        }
    )
    recorder = Recorder()
    trainer = Trainer(config, tmp_path / "out", callbacks=recorder)

    # when it trains
    trainer.train()

    # then the long row was dropped and reported, and the prompts went through the template
    assert len(trainer.train_examples) == 6
    kinds = {kind: (step, message, payload) for kind, step, message, payload in recorder.events}
    assert kinds["prompts"][0] == 0 and "dropped 1 training prompts" in kinds["prompts"][1]
    assert recorder.steps[0]["overlong_prompts_dropped"] >= 1
    sample_prompts = [s["prompt"] for s in kinds["samples"][2]["samples"]]
    assert all(p.startswith("Add.<|User|>") and p.endswith("<|Assistant|><think>\n") for p in sample_prompts)
    assert trainer.eval_sets[0].prompts[0].endswith("<|Assistant|><think>\n")
