"""The context window of the vLLM rollout engine, and the prompt budget left inside it.

vLLM serves sequences of at most `max_model_len` tokens, prompt and response together, and refuses a
prompt of `max_model_len` tokens or more (or an empty one) with a ValueError that aborts the whole
`generate` call (vllm/v1/engine/input_processor.py, InputProcessor._validate_prompt_len). It also
refuses, at start, a `max_model_len` above the one it derives from the model's config
(vllm/config/model.py, _get_and_verify_max_len). So the engine asks for

    max_model_len = min(max_prompt_tokens + max_new_tokens, the model's position limit)

and left-truncates every prompt to

    prompt_budget = min(max_prompt_tokens, max_model_len - max_new_tokens)

tokens, as the HF engine left-truncates to max_prompt_tokens: no prompt reaches vLLM that it would
refuse, and every response has room for all of its max_new_tokens. A job whose max_new_tokens leaves
no room for a prompt is refused at submission (when the model's config.json can be read without
network), at job start, and by the engine itself.

Only the position limit the config states is used, never a rope-scaled extension of it: vLLM derives
at least that much, so the length asked for is always accepted.

Imports nothing heavy: the API runs these checks before it accepts a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Where configs state their position limit: the keys vLLM reads (vllm/config/model.py,
# _get_and_verify_max_len, possible_keys); like vLLM, the smallest one present wins.
POSITION_LIMIT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


class ContextLengthError(ValueError):
    """The job's responses leave no room for a prompt in vLLM's context; `field` is the knob to turn."""

    field = "rollout.max_new_tokens"


def model_position_limit(config: Any) -> int | None:
    """The most positions the model's config allows (a transformers config or a config.json dict).

    None when the config states none. A nested `text_config` (vision-language models) is what the
    text decoder, and so vLLM's context, is bound by.
    """
    text = _get(config, "text_config")
    if text is not None:
        config = text
    limits = [value for key in POSITION_LIMIT_KEYS if _is_count(value := _get(config, key))]
    return min(limits) if limits else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def vllm_max_model_len(max_prompt_tokens: int | None, max_new_tokens: int, position_limit: int | None) -> int | None:
    """The max_model_len the engine asks vLLM for; None leaves it to vLLM (nothing bounds it here)."""
    if max_prompt_tokens is None:
        return position_limit
    wanted = max_prompt_tokens + max_new_tokens
    return min(wanted, position_limit) if position_limit else wanted


def prompt_budget(max_prompt_tokens: int | None, max_new_tokens: int, max_model_len: int | None) -> int | None:
    """Tokens a prompt may keep so that it and max_new_tokens fit in max_model_len; None: no bound.

    Raises ContextLengthError, naming the sizes, when not even a one-token prompt fits.
    """
    if max_model_len is None:
        return max_prompt_tokens
    room = max_model_len - max_new_tokens
    if room < 1:
        raise ContextLengthError(
            f"rollout.max_new_tokens {max_new_tokens} leaves no room for a prompt: rollout.backend 'vllm' "
            f"serves at most {max_model_len} tokens per sequence (prompt + response) for this model; "
            f"lower rollout.max_new_tokens below {max_model_len}"
        )
    return room if max_prompt_tokens is None else min(max_prompt_tokens, room)


def check_vllm_context(cfg: Any, position_limit: int | None) -> None:
    """Refuse a `rollout.backend: vllm` job (a TrainConfig) whose responses leave no room for a prompt."""
    if cfg.rollout.backend != "vllm":
        return
    max_model_len = vllm_max_model_len(cfg.data.max_prompt_tokens, cfg.rollout.max_new_tokens, position_limit)
    prompt_budget(cfg.data.max_prompt_tokens, cfg.rollout.max_new_tokens, max_model_len)
