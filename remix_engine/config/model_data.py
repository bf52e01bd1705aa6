"""The model and data sections of a job config: which base model, which prompts and answers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from remix_engine.chat_format import CHAT_TEMPLATE_MODES, check_chat_template_syntax
from remix_engine.config.limits import (
    MAX_CHAT_TEMPLATE_CHARS,
    MAX_EVAL_PROMPTS,
    MAX_SYSTEM_PROMPT_CHARS,
    StrictModel,
)
from remix_engine.prompt_template import PROMPT_TEMPLATE_RULE, check_prompt_template

TINY_MODEL_ID = "builtin:tiny-arith"
TINY_CHAT_MODEL_ID = "builtin:tiny-chat"
TINY_REASONER_MODEL_ID = "builtin:tiny-reasoner"
BUILTIN_MODEL_IDS = (TINY_MODEL_ID, TINY_CHAT_MODEL_ID, TINY_REASONER_MODEL_ID)
TOY_DATASET_ID = "builtin:addition"
REASONING_DATASET_ID = "builtin:column-addition"
BUILTIN_DATASET_IDS = (TOY_DATASET_ID, REASONING_DATASET_ID)
# `model.name_or_path: job:<job id>[@<step>]`: a checkpoint of an earlier job of the same tenant
# (the newest one without a step), resolved by the API (which checks it) and the worker (which loads it).
JOB_MODEL_PREFIX = "job:"
_JOB_MODEL = re.compile(
    r"^job:(?P<job>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:@(?P<step>[0-9]{1,6}))?$",
    re.IGNORECASE,
)
JOB_MODEL_RULE = "job:<job id>[@<step>], e.g. job:0b9e...c1@20 (a job's UUID and an optional checkpoint step)"


def parse_job_model(name: str) -> tuple[str, int | None] | None:
    """(job id, step or None) of a `job:<id>[@<step>]` model name; None for any other name.

    Raises ValueError for a name that starts with `job:` but is not of that form."""
    if not name.startswith(JOB_MODEL_PREFIX):
        return None
    match = _JOB_MODEL.match(name)
    if match is None:
        raise ValueError(f"a model name starting with {JOB_MODEL_PREFIX!r} must be {JOB_MODEL_RULE}")
    step = match.group("step")
    return match.group("job").lower(), None if step is None else int(step)


def job_model_name(job_id: str, step: int | None = None) -> str:
    return f"{JOB_MODEL_PREFIX}{job_id}" if step is None else f"{JOB_MODEL_PREFIX}{job_id}@{step}"


class ModelConfig(StrictModel):
    """Which base model to finetune."""

    name_or_path: str = Field(
        TINY_MODEL_ID,
        min_length=1,
        description=(
            "A local Hugging Face model directory, a hub id (e.g. 'Qwen/Qwen2.5-0.5B-Instruct'), "
            f"'{TINY_MODEL_ID}' for the small Llama-style arithmetic model built locally from a seed "
            f"(character tokenizer, plain-text prompts), '{TINY_CHAT_MODEL_ID}' for the small Qwen2 chat model "
            "built locally (byte-level BPE tokenizer and ChatML template, pretrained on chat-formatted addition), "
            f"'{TINY_REASONER_MODEL_ID}' for the small Llama-style model built locally that works 3-digit "
            "additions out column by column before its boxed answer (character tokenizer, plain-text prompts), "
            "or 'job:<job id>[@<step>]' to start from a checkpoint of an earlier job of the same tenant (the "
            "newest one without @step; the service stores the step it picked). Through the API, local "
            "directories are for admin keys, or inside the operator's REMIX_MODEL_DIRS."
        ),
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype of the learner. float32 on CPU."
    )
    trust_remote_code: bool = Field(False, description="Passed to transformers' from_pretrained.")

    @field_validator("name_or_path")
    @classmethod
    def _job_reference_is_well_formed(cls, value: str) -> str:
        parse_job_model(value)  # raises for a malformed job:<id>[@<step>]
        return value


class DataConfig(StrictModel):
    """Training and evaluation prompts with verifiable answers."""

    train_path: str = Field(
        TOY_DATASET_ID,
        min_length=1,
        description=(
            "JSONL, JSON or parquet file with a prompt and an answer column, or "
            f"'{TOY_DATASET_ID}' for the synthetic 2-digit addition task, or '{REASONING_DATASET_ID}' for "
            "3-digit additions whose worked answers run 30-80 tokens."
        ),
    )
    eval_path: str | None = Field(
        None, description="Held-out set in the same format. For the builtin task a disjoint split is used."
    )
    prompt_field: str = Field("prompt", min_length=1, description="Column holding the prompt text.")
    answer_field: str = Field("answer", min_length=1, description="Column holding the reference answer.")
    prompt_template: str = Field(
        "{prompt}",
        description=(
            "Text around each prompt (remix_engine/prompt_template.py, used by training and evaluation alike); "
            f"{PROMPT_TEMPLATE_RULE}."
        ),
    )
    chat_template: str = Field(
        "auto",
        min_length=1,
        max_length=MAX_CHAT_TEMPLATE_CHARS,
        description=(
            "How prompts are laid out for the model: 'auto' (the tokenizer's own chat template when it has "
            "one, else plain text), 'none' (plain text), or a Jinja chat template of your own (rendered as "
            "transformers' apply_chat_template does, with add_generation_prompt). The same rendering is used "
            "for training, evaluation and the samples shown on the dashboard."
        ),
    )
    system_prompt: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_SYSTEM_PROMPT_CHARS,
        description="A system message put before each conversation that has none (chat templates only).",
    )
    max_prompt_tokens: int = Field(
        512,
        ge=1,
        le=65536,
        description="Longest prompt, in tokens after the chat template; longer ones follow overlong_prompts.",
    )
    overlong_prompts: Literal["drop", "error"] = Field(
        "drop",
        description=(
            "What happens to prompts longer than max_prompt_tokens, counted when the job starts: 'drop' them "
            "(the count is reported in the job's events and step metrics) or fail the job ('error'). "
            "Prompts are never truncated."
        ),
    )
    eval_size: int = Field(
        200, ge=1, le=MAX_EVAL_PROMPTS, description="Number of held-out prompts evaluated (greedy Pass@1)."
    )

    @field_validator("prompt_template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        return check_prompt_template(value)

    @field_validator("chat_template")
    @classmethod
    def _chat_template_compiles(cls, value: str) -> str:
        if value not in CHAT_TEMPLATE_MODES:
            check_chat_template_syntax(value)
        return value

