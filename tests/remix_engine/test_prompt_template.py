"""Prompt templates: `{prompt}` is the only placeholder, every other brace is literal text, and a
template that validates always renders (to a bounded size) in training and evaluation alike."""

import re

import pytest
from pydantic import ValidationError

from remix_engine.config import TrainConfig
from remix_engine.data import Example
from remix_engine.prompt_template import (
    MAX_PROMPT_COPIES,
    MAX_TEMPLATE_CHARS,
    check_prompt_template,
    render_prompt,
)

BOXED = "{prompt} Let's think step by step and output the final answer within \\boxed{}."


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        (BOXED, "1+1= Let's think step by step and output the final answer within \\boxed{}."),
        ("{prompt}{0}", "1+1={0}"),  # not a format string: no IndexError, the braces stay
        ("Solve \\frac{1}{2} + {x}: {prompt}", "Solve \\frac{1}{2} + {x}: 1+1="),
        ("{{prompt}} {}", "{1+1=} {}"),  # no escaping either: {{ and }} are literal
        ("Q: {prompt}\nA (repeat: {prompt}):", "Q: 1+1=\nA (repeat: 1+1=):"),
    ],
)
def test_literal_braces_render_as_written(template, rendered):
    assert check_prompt_template(template) == template
    assert render_prompt(template, "1+1=") == rendered


def test_text_inside_the_prompt_is_never_substituted():
    prompt = "Is {prompt} or {prompt:>99} or {0} in here?"
    assert render_prompt("<{prompt}>", prompt) == f"<{prompt}>"


def test_evaluation_renders_with_the_same_function():
    # Training and evaluation prompts both come from PromptSet.prepare (remix_engine/prompts.py).
    from remix_engine.config import DataConfig
    from remix_engine.prompts import PromptSet
    from remix_engine.toy import build_char_tokenizer

    examples = [Example(prompt="2+2=", answer="4"), Example(prompt="{0}", answer="x")]
    prompts = PromptSet(build_char_tokenizer(), DataConfig(prompt_template=BOXED, chat_template="none"))
    assert prompts.render(examples) == [render_prompt(BOXED, "2+2="), render_prompt(BOXED, "{0}")]
    assert prompts.render(examples)[0].endswith("within \\boxed{}.")


BAD_TEMPLATES = [
    pytest.param("no placeholder", "must contain the placeholder", id="missing"),
    pytest.param("{prompt}{prompt:>1000000000}", "'{prompt:>1000000000}' is not a placeholder", id="format-spec"),
    pytest.param("{prompt!r}", "'{prompt!r}' is not a placeholder", id="conversion"),
    pytest.param("{prompt} {prompt.upper}", "'{prompt.upper}' is not", id="attribute"),
    pytest.param("{prompt} {prompt[0]}", "'{prompt[0]}' is not", id="index"),
    pytest.param("{prompts}", "'{prompts}' is not", id="misspelt"),
    pytest.param("{prompt}" + "x" * MAX_TEMPLATE_CHARS, f"at most {MAX_TEMPLATE_CHARS}", id="too-long"),
    pytest.param("{prompt}" * (MAX_PROMPT_COPIES + 1), f"{MAX_PROMPT_COPIES + 1} times; at most", id="too-many-copies"),
]


@pytest.mark.parametrize(("template", "message"), BAD_TEMPLATES)
def test_bad_templates_are_refused_naming_the_field(template, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_prompt_template(template)
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({"data": {"prompt_template": template}})
    assert [".".join(map(str, e["loc"])) for e in info.value.errors()] == ["data.prompt_template"]


def test_the_largest_valid_template_renders_to_a_bounded_size():
    template = ("{prompt}" * MAX_PROMPT_COPIES).ljust(MAX_TEMPLATE_CHARS, "x")
    assert check_prompt_template(template) == template
    prompt = "p" * 10_000
    assert len(render_prompt(template, prompt)) <= MAX_TEMPLATE_CHARS + MAX_PROMPT_COPIES * len(prompt)


def test_training_and_evaluation_render_a_braced_template_identically(random_model_dir, tmp_path):
    from remix_engine.trainer import Trainer

    template = "{prompt}{0} Answer within \\boxed{}."  # str.format raised IndexError on the worker
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": random_model_dir},
            "data": {"eval_size": 4, "prompt_template": template},
            "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4},
            "algorithm": {"name": "grpo", "minibatch_size": 4},
            "total_steps": 1,
            "log_completions": 0,
        }
    )
    trainer = Trainer(cfg, tmp_path)
    example, held_out = trainer.train_examples[0], trainer.eval_examples[0]
    assert trainer.train_prompts[0] == render_prompt(template, example.prompt)
    assert trainer.eval_sets[0].prompts[0] == render_prompt(template, held_out.prompt)
    assert trainer.eval_sets[0].prompts[0].endswith("{0} Answer within \\boxed{}.")
    trainer.train_step()  # a whole step renders its prompts without error
