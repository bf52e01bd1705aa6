"""Prompts laid out by chat templates exactly as transformers' apply_chat_template lays them out (text
and token ids), system prompts, content parts, plain text, and templates that fail or never finish."""

from __future__ import annotations

import time

import pytest

from remix_engine.chat_format import (
    ChatTemplateError,
    PromptFormatter,
    conversation,
    normalise_messages,
    render_bounded,
    think_opened,
)
from remix_engine.toy import build_char_tokenizer

# ChatML with a BOS in front, as Llama-3- and R1-style templates put one there themselves.
CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
R1_LIKE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|User|>{{ m['content'] }}"
    "{% elif m['role'] == 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer():
    """The character tokenizer (which adds <bos> by itself) given chat special tokens and a template."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|User|>",
                                                                "<|Assistant|>"]})  # fmt: skip
    tokenizer.chat_template = CHATML
    return tokenizer


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Now 7*6?"},
    ],
]


def test_rendering_is_apply_chat_template_text_and_ids(chat_tokenizer) -> None:
    formatter = PromptFormatter(chat_tokenizer, chat_template="auto", system_prompt=None)
    texts = formatter.format([(turns, "") for turns in CONVERSATIONS])
    for turns, text in zip(CONVERSATIONS, texts, strict=True):
        expected_text = chat_tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        expected_ids = chat_tokenizer.apply_chat_template(turns, tokenize=True, add_generation_prompt=True)
        if not isinstance(expected_ids, list):  # transformers 5 returns a BatchEncoding
            expected_ids = expected_ids["input_ids"]
        # the tokenizer adds its own <bos>, so the text leaves it out and the ids come out the same
        assert "<bos>" + text == expected_text
        assert chat_tokenizer(text)["input_ids"] == expected_ids
        assert text.endswith("<|im_start|>assistant\n")


def test_a_system_prompt_goes_first_unless_the_row_has_one(chat_tokenizer) -> None:
    formatter = PromptFormatter(chat_tokenizer, chat_template="auto", system_prompt="Reason step by step.")
    plain, with_system = formatter.format([(None, "2+2="), (CONVERSATIONS[1], "")])
    assert plain.startswith("<|im_start|>system\nReason step by step.<|im_end|>\n<|im_start|>user\n2+2=")
    assert "Reason step by step." not in with_system and "Be brief." in with_system


def test_content_parts_and_every_turn_are_kept() -> None:
    parts = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                {"type": "text", "text": "b"}]}]
    assert normalise_messages(parts) == [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"}]
    assert normalise_messages([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]) is None
    assert normalise_messages([{"role": "wizard", "content": "x"}]) is None
    assert conversation(None, "p", system_prompt=None) == [{"role": "user", "content": "p"}]


def test_none_and_a_tokenizer_without_template_give_plain_text(chat_tokenizer) -> None:
    rows = [(None, "2+2="), (CONVERSATIONS[1], "")]
    assert PromptFormatter(chat_tokenizer, chat_template="none", system_prompt=None).format(rows) == [
        "2+2=",
        "Be brief.\n\n1+1?",
    ]
    bare = build_char_tokenizer()  # no chat template
    assert PromptFormatter(bare, chat_template="auto", system_prompt=None).format(rows[:1]) == ["2+2="]


def test_a_jobs_own_template_and_an_open_think_block(chat_tokenizer) -> None:
    formatter = PromptFormatter(chat_tokenizer, chat_template=R1_LIKE, system_prompt=None)
    (text,) = formatter.format([(None, "2+3=")])
    assert text == "<|User|>2+3=<|Assistant|><think>\n"
    assert think_opened(text) and not think_opened(text + "ok</think>")


def test_a_template_that_never_finishes_is_stopped() -> None:
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ChatTemplateError, match=r"took longer than 2s to render 1 prompts"):
        render_bounded([[{"role": "user", "content": "x"}]], endless, {}, timeout_s=2)
    assert time.monotonic() - started < 10


def test_a_template_that_raises_names_its_error() -> None:
    failing = "{{ raise_exception('only user turns, please') }}"
    with pytest.raises(ChatTemplateError, match="only user turns, please"):
        render_bounded([[{"role": "user", "content": "x"}]], failing, {})


def test_a_template_that_does_not_parse_is_refused_by_the_config() -> None:
    from pydantic import ValidationError

    from remix_engine.config import TrainConfig

    with pytest.raises(ValidationError, match=r"data.chat_template\n.*not a valid Jinja template"):
        TrainConfig.model_validate({"data": {"chat_template": "{% if x %}never closed"}})
