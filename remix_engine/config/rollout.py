"""The rollout section of a job config: how responses are sampled from the current policy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from remix_engine.config.limits import (
    MAX_BATCH,
    MAX_GROUP_SIZE,
    MAX_NEW_TOKENS,
    MAX_PROMPTS_PER_STEP,
    MAX_STOP_STRING_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOP_K,
    StrictModel,
)

# vLLM raises a temperature in (0, 0.01) to 0.01 (vllm/sampling_params.py, SamplingParams.__post_init__,
# _MAX_TEMP) and refuses one above 2 (SamplingParams._verify_args), while the learner divides the logits
# by the configured value: the vllm backend takes only temperatures it samples at exactly.
VLLM_MIN_TEMPERATURE = 0.01
VLLM_MAX_TEMPERATURE = 2.0
# Why rollouts sample from the whole tempered distribution (rollout.top_p 1, rollout.top_k 0).
_NO_FILTER_REASON = (
    "the learner scores every response under the whole tempered distribution (as TRL and verl do), while a "
    "top-p/top-k sampler reports log-probs renormalised over the tokens it kept, so importance ratios and "
    "the clip centre would be biased by the filter; sample with the temperature alone"
)


def check_vllm_temperature(value: float, field: str) -> None:
    """Refuse a sampling temperature vLLM would change or refuse (see VLLM_MIN_TEMPERATURE)."""
    if not VLLM_MIN_TEMPERATURE <= value <= VLLM_MAX_TEMPERATURE:
        raise ValueError(
            f"{field} {value} is outside [{VLLM_MIN_TEMPERATURE}, {VLLM_MAX_TEMPERATURE}]: rollout.backend 'vllm' "
            f"raises temperatures below {VLLM_MIN_TEMPERATURE} to {VLLM_MIN_TEMPERATURE} and refuses those above "
            f"{VLLM_MAX_TEMPERATURE}, while the learner divides by the configured value; pick one inside the "
            "range, or use rollout.backend 'hf'"
        )


class VllmConfig(StrictModel):
    """The colocated vLLM engine of `rollout.backend: vllm` (one engine per training process, same GPU)."""

    gpu_memory_utilization: float = Field(
        0.3,
        gt=0.0,
        le=0.95,
        description=(
            "Fraction of the GPU's memory vLLM may take for its weights copy and KV cache; the learner "
            "needs the rest. A memory knob: lower it when the learner runs out of memory."
        ),
    )
    enable_sleep_mode: bool = Field(
        True,
        description=(
            "Release vLLM's weights and KV cache while the learner runs (sleep level 2) and reload the "
            "learner's weights before the next rollout. Ignored when the installed vLLM lacks sleep mode."
        ),
    )
    enforce_eager: bool = Field(
        False, description="Disable CUDA graphs (slower decoding, faster start and less memory)."
    )


class RolloutConfig(StrictModel):
    """How responses are sampled from the current policy."""

    backend: Literal["hf", "vllm"] = Field("hf", description="'hf' (transformers, CPU/GPU) or 'vllm' (GPU).")
    prompts_per_step: int = Field(
        64, ge=1, le=MAX_PROMPTS_PER_STEP, description="Prompt groups per training step."
    )
    group_size: int = Field(8, ge=1, le=MAX_GROUP_SIZE, description="Responses sampled per prompt (GRPO group).")
    max_new_tokens: int = Field(
        1024,
        ge=1,
        le=MAX_NEW_TOKENS,
        description=(
            "Maximum response length in tokens. A response that reaches it without an EOS token or a stop "
            "string is truncated (step metric truncated_fraction; reward.overlong decides how it trains)."
        ),
    )
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_STRING_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_STOP_STRINGS,
        description=(
            f"Stop strings (at most {MAX_STOP_STRINGS}, each 1-{MAX_STOP_STRING_CHARS} characters), besides the "
            "EOS tokens: a response ends with the token that completes the first of them in its text, and "
            "is not truncated. The trained tokens end with that token, and the completion the rewards see "
            "ends with the stop string itself (kept, with both backends; any characters of its last token "
            "after the stop string are cut from the text)."
        ),
    )
    temperature: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description=(
            "Sampling temperature (also used in log-probs). With rollout.backend 'vllm' it must be in "
            f"[{VLLM_MIN_TEMPERATURE}, {VLLM_MAX_TEMPERATURE}], the range vLLM samples at exactly."
        ),
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=f"Nucleus sampling mass. Must be 1.0: {_NO_FILTER_REASON}.",
    )
    top_k: int = Field(0, ge=0, le=MAX_TOP_K, description=f"Top-k filter; must be 0 (off): {_NO_FILTER_REASON}.")
    generation_batch_size: int = Field(
        512,
        ge=1,
        le=MAX_BATCH,
        description="Sequences generated per forward batch (memory knob, not an algorithm knob).",
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="Options of the 'vllm' backend (ignored by 'hf').")

    @field_validator("temperature")
    @classmethod
    def _vllm_samples_at_this_temperature(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("backend") == "vllm":  # absent when the backend itself was refused
            check_vllm_temperature(value, "rollout.temperature")
        return value

    @field_validator("stop")
    @classmethod
    def _distinct_stop_strings(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("rollout.stop lists a stop string twice")
        return value

    @field_validator("top_p")
    @classmethod
    def _no_nucleus_filter(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError(f"rollout.top_p must be 1.0: {_NO_FILTER_REASON}")
        return value

    @field_validator("top_k")
    @classmethod
    def _no_top_k_filter(cls, value: int) -> int:
        if value != 0:
            raise ValueError(f"rollout.top_k must be 0: {_NO_FILTER_REASON}")
        return value

