"""One validated configuration schema for a ReMix finetuning job.

The same pydantic models are used by the HTTP API (to validate a job before it is stored)
and by the engine (to run it), so a job accepted by the API can always be run. This module
imports only pydantic (and google-re2 to check regex rewards): the API process never loads torch.

Types are strict everywhere: a bool is not a number, a string is not a number, an int is not a
bool; floats accept ints but never NaN or infinity. Every count has an upper bound that real jobs
never reach, so a config that validates can be run.

Defaults follow the reading of the paper (arXiv 2507.06892) in docs: p=0.4, N=2, m=2,
T=50, clip 0.2, beta=0.001, k3 KL, entropy bonus 0.001, token-mean aggregation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from remix_engine.chat_format import CHAT_TEMPLATE_MODES, check_chat_template_syntax
from remix_engine.eval_benchmarks import BENCHMARK_NAMES, unknown_benchmark_message
from remix_engine.prompt_template import PROMPT_TEMPLATE_RULE, check_prompt_template
from remix_engine.reward_specs import MAX_REWARD_FUNCTIONS, REWARD_NAMES, check_reward_kwargs, kwargs_description

Algorithm = Literal["remix-grpo", "remix-ppo", "grpo", "ppo"]
KLEstimator = Literal["k1", "k2", "k3"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
# The reward names come from the one registry of rewards (remix_engine/reward_specs.py).
RewardName = Literal[REWARD_NAMES]  # type: ignore[valid-type]

# Upper bounds of counts: far above any real RFT job, low enough that nothing explodes on a worker.
MAX_SEED = 2**32 - 1  # numpy (and vLLM, which seeds numpy) takes seeds below 2**32
MAX_STEPS = 100_000  # total_steps and every step-valued knob
MAX_PROMPTS_PER_STEP = 8192
MAX_GROUP_SIZE = 256
MAX_NEW_TOKENS = 65536
MAX_BATCH = 65536  # rollout.generation_batch_size, algorithm.minibatch_size
MAX_TOP_K = 2**20  # above any vocabulary; top_k >= vocabulary size filters nothing
MAX_EVAL_PROMPTS = 100_000
MAX_KEPT_CHECKPOINTS = 100
MAX_LOGGED_COMPLETIONS = 64
MAX_EVAL_SETS = 16
MAX_EVAL_SAMPLES = 64  # k of avg@k

MAX_STOP_STRINGS = 8
MAX_STOP_STRING_CHARS = 64

MAX_CHAT_TEMPLATE_CHARS = 64 * 1024
MAX_SYSTEM_PROMPT_CHARS = 16 * 1024
TINY_MODEL_ID = "builtin:tiny-arith"
TINY_CHAT_MODEL_ID = "builtin:tiny-chat"
BUILTIN_MODEL_IDS = (TINY_MODEL_ID, TINY_CHAT_MODEL_ID)
TOY_DATASET_ID = "builtin:addition"
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


class _Strict(BaseModel):
    # strict: no coercion (true is not 1, "3" is not 3, 2.0 is not an int); floats still take ints.
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), strict=True, allow_inf_nan=False
    )


class ModelConfig(_Strict):
    """Which base model to finetune."""

    name_or_path: str = Field(
        TINY_MODEL_ID,
        min_length=1,
        description=(
            "A local Hugging Face model directory, a hub id (e.g. 'Qwen/Qwen2.5-0.5B-Instruct'), "
            f"'{TINY_MODEL_ID}' for the small Llama-style arithmetic model built locally from a seed "
            f"(character tokenizer, plain-text prompts), '{TINY_CHAT_MODEL_ID}' for the small Qwen2 chat model "
            "built locally (byte-level BPE tokenizer and ChatML template, pretrained on chat-formatted addition), "
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


class DataConfig(_Strict):
    """Training and evaluation prompts with verifiable answers."""

    train_path: str = Field(
        TOY_DATASET_ID,
        min_length=1,
        description=(
            "JSONL, JSON or parquet file with a prompt and an answer column, or "
            f"'{TOY_DATASET_ID}' for the synthetic 2-digit addition task."
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


class VllmConfig(_Strict):
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


class RolloutConfig(_Strict):
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


class RewardSpec(_Strict):
    """One reward function of the weighted composition (the names and kwargs: remix_engine/reward_specs.py)."""

    name: RewardName = Field(description="Registry key of the reward function.")
    weight: float = Field(1.0, description="Weight in the weighted sum of rewards (finite).")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,  # the regex and python rewards need kwargs: none given is checked too
        description=kwargs_description(),
    )

    @field_validator("kwargs")
    @classmethod
    def _kwargs_of_the_reward(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")  # absent when the name itself was refused
        if name is not None:
            check_reward_kwargs(name, value)  # a kwargs model's errors are located under kwargs
        return value


class RewardConfig(_Strict):
    """Rewards are a weighted sum of registered pure functions; accuracy uses the first one."""

    functions: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="math_verify")],
        min_length=1,
        max_length=MAX_REWARD_FUNCTIONS,
        description="Reward functions and weights. The first one defines 'accuracy'.",
    )
    overlong: Literal["keep", "zero", "mask"] = Field(
        "keep",
        description=(
            "What a truncated response (rollout.max_new_tokens reached without an EOS token or a stop "
            "string) trains with: 'keep' the reward it got; 'zero': its reward is set to 0 before "
            "advantages; 'mask': it contributes no loss (policy, entropy, KL and, for PPO, value terms; "
            "DAPO's overlong filtering) while its reward still counts in its group's GRPO mean and std "
            "(and its tokens in GAE whitening). Replayed responses keep their flag."
        ),
    )


class AlgorithmConfig(_Strict):
    """ReMix knobs. For the on-policy baselines 'grpo' and 'ppo' replay and reincarnation are off."""

    name: Algorithm = Field("remix-grpo", description="remix-grpo, remix-ppo, or the baselines grpo, ppo.")
    off_policy_fraction: float = Field(
        0.4,
        ge=0.0,
        lt=1.0,
        description="p: fraction of each batch replayed from the last N policies, in [0, 1).",
    )
    history_window: int = Field(2, ge=1, le=1000, description="N: number of past policies whose rollouts are replayed.")
    utd_ratio: int = Field(2, ge=1, le=100, description="m: optimisation passes over each mixed batch (Mix phase).")
    reincarnation_step: int | None = Field(
        50,
        ge=0,
        le=MAX_STEPS,
        description="T: after step T the KL anchor becomes the current policy and training goes on-policy. "
        "null: never.",
    )
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="epsilon: half-width of the clip window.")
    kl_coef: float = Field(0.001, ge=0.0, description="beta: coefficient of the KL-Convex loss term.")
    kl_estimator: KLEstimator = Field("k3", description="Per-token KL estimator: k1, k2 or k3 (low-variance).")
    lambda_start_step: int = Field(50, ge=0, le=MAX_STEPS, description="lambda(t)=1 up to this step, then decays.")
    lambda_interval: int = Field(10, ge=1, le=MAX_STEPS, description="Steps per lambda decrement.")
    lambda_decay: float = Field(0.1, ge=0.0, le=1.0, description="Decrement of lambda per interval.")
    lambda_min: float = Field(0.5, ge=0.0, le=1.0, description="Floor of lambda(t).")
    entropy_coef: float = Field(0.001, ge=0.0, description="c: entropy bonus coefficient (subtracted from the loss).")
    loss_aggregation: LossAggregation = Field("token-mean", description="How per-token losses are reduced.")
    ppo_epochs: int = Field(1, ge=1, le=100, description="Optimisation passes per batch in the on-policy phase.")
    minibatch_size: int = Field(
        512,
        ge=1,
        le=MAX_BATCH,
        description="Responses per optimizer step; a batch is split into minibatches of this size.",
    )
    log_inactive_kl: bool = Field(
        True,
        description="Also compute a KL-Convex term whose weight is 0 (the precedent while lambda == 1, "
        "both when kl_coef == 0) so kl_ref and kl_prev are reported every step; false saves one "
        "no-grad forward pass over the batch per inactive term.",
    )
    reset_optimizer_on_reincarnation: bool = Field(
        True, description="Start a fresh Adam state at reincarnation (the relaunch reading of the paper)."
    )
    gae_gamma: float = Field(1.0, ge=0.0, le=1.0, description="PPO: GAE discount.")
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0, description="PPO: GAE lambda.")
    value_clip: float = Field(0.2, gt=0.0, description="PPO: clip range of the value loss.")
    value_coef: float = Field(0.5, gt=0.0, description="PPO: weight of the critic loss.")

    @property
    def uses_replay(self) -> bool:
        return self.name.startswith("remix-")

    @property
    def advantage_estimator(self) -> Literal["grpo", "gae"]:
        return "gae" if self.name.endswith("ppo") else "grpo"

    @property
    def policy_loss(self) -> str:
        return "mix_ppg" if self.uses_replay else "ppo_clip"

    @property
    def effective_reincarnation_step(self) -> int | None:
        return self.reincarnation_step if self.uses_replay else None

    def lambda_at(self, step: int) -> float:
        """lambda(t) = max(1 - decay * ceil(max(t - start, 0) / interval), min)."""
        over = max(step - self.lambda_start_step, 0)
        decrements = -(-over // self.lambda_interval)
        return max(1.0 - self.lambda_decay * decrements, self.lambda_min)


class OptimConfig(_Strict):
    """Adam optimiser of the policy (and of the critic for PPO)."""

    lr: float = Field(1e-6, gt=0.0, le=1.0, description="Policy learning rate (constant).")
    critic_lr: float = Field(1e-5, gt=0.0, le=1.0, description="Critic learning rate (PPO).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas (a list of two numbers).")
    grad_clip: float = Field(1.0, gt=0.0, description="Global gradient-norm clip.")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_from_a_list(cls, value: Any) -> Any:
        # YAML and JSON have lists, not tuples; the items are still checked strictly.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError("each Adam beta must be in [0, 1)")
        return value


_EVAL_SET_SAMPLES = Field(
    None,
    ge=0,
    le=MAX_EVAL_SAMPLES,
    description="k of avg@k Pass@1 for this set (0: greedy Pass@1 only); null: the job's eval_samples.",
)


class EvalSetSpec(_Strict):
    """An extra held-out set read from a file (e.g. a benchmark file); server paths are admin-only in the API."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Metric prefix.")
    path: str = Field(min_length=1, description="JSONL, JSON or parquet file with prompts and answers.")
    prompt_field: str = Field("prompt", min_length=1, description="Column holding the prompt text.")
    answer_field: str = Field("answer", min_length=1, description="Column holding the reference answer.")
    size: int = Field(500, ge=1, le=MAX_EVAL_PROMPTS, description="At most this many prompts are evaluated.")
    samples: int | None = _EVAL_SET_SAMPLES


class BuiltinEvalSetSpec(_Strict):
    """A builtin evaluation set shipped with ReMix, selected by name (remix_engine/eval_benchmarks.py)."""

    name: str = Field(
        description=f"One of {', '.join(BENCHMARK_NAMES)}; also the metric prefix (eval_<name>/accuracy).",
        json_schema_extra={"enum": list(BENCHMARK_NAMES)},
    )
    size: int | None = Field(
        None, ge=1, le=MAX_EVAL_PROMPTS, description="Evaluate only the first `size` problems; null: all of them."
    )
    samples: int | None = _EVAL_SET_SAMPLES

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in BENCHMARK_NAMES:
            raise ValueError(unknown_benchmark_message(value))
        return value


def _eval_set_entry(value: Any, handler: ValidatorFunctionWrapHandler) -> EvalSetSpec | BuiltinEvalSetSpec:
    """A builtin name ("aime24"), a builtin object ({name, size?, samples?}) or a file set ({name, path, ...}).

    Dispatched by shape and validated by one model, so errors are located at that model's fields
    (eval_sets.0.name), never under a union member's name.
    """
    del handler  # the union's own validation would report every member's errors
    if isinstance(value, EvalSetSpec | BuiltinEvalSetSpec):
        return value
    if isinstance(value, str):
        return BuiltinEvalSetSpec.model_validate({"name": value})
    if isinstance(value, dict):
        return (EvalSetSpec if "path" in value else BuiltinEvalSetSpec).model_validate(value)
    raise ValueError(
        "an eval set is a builtin name (one of " + ", ".join(BENCHMARK_NAMES) + ") or an object with a name"
    )


EvalSetEntry = Annotated[
    BuiltinEvalSetSpec | EvalSetSpec,
    WrapValidator(_eval_set_entry, json_schema_input_type=Literal[BENCHMARK_NAMES] | BuiltinEvalSetSpec | EvalSetSpec),
]


# Module names LoRA may target: attribute names only, never import paths or code.
_MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class LoraConfig(_Strict):
    """Low-rank adapters (peft) on the policy: only the adapter weights are trained.

    Not peft's class of the same name: this is the job's validated description of it.
    Checkpoints hold the merged full weights (a plain transformers folder) plus the adapter
    in an `adapter/` subfolder. The learner runs in eval mode so that log-probs are exact,
    so `dropout` only matters to someone who keeps training the saved adapter elsewhere.
    """

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0.0, le=1e6, description="Adapter updates are scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Adapter input dropout (off in eval mode).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Names of the linear layers that get adapters (e.g. q_proj, v_proj, gate_proj).",
    )

    @field_validator("target_modules")
    @classmethod
    def _plain_module_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(_MODULE_NAME, name)]
        if bad:
            raise ValueError(f"lora.target_modules must be plain module names like 'q_proj'; got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("lora.target_modules lists a module twice")
        return value


class DistributedConfig(_Strict):
    """How one job uses several processes (launched by torchrun); ignored by a single process."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description=(
            "'ddp': every process holds the whole model, gradients are averaged. "
            "'fsdp': the learner's parameters, gradients and optimizer state are sharded over the "
            "processes (FSDP2); each process keeps the full weights for rollouts. Not with lora.enabled."
        ),
    )
    num_processes: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Training processes of this job on its worker machine (data parallel, launched with torchrun): "
            "one per GPU on a GPU worker (the worker refuses a job asking for more GPUs than it sees), "
            "gloo processes on a CPU worker. Each step needs at least this many fresh prompt groups."
        ),
    )


class TrainConfig(_Strict):
    """A whole finetuning job: model, data, rollout, reward, algorithm, optimiser and schedule."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    total_steps: int = Field(
        100, ge=1, le=MAX_STEPS, description="Training steps (one rollout batch each)."
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seeds model init, data order and every sampled response; in [0, 2**32 - 1].",
    )
    eval_every: int = Field(
        0, ge=0, le=MAX_STEPS, description="Evaluate greedy Pass@1 every K steps; 0: only at start and end."
    )
    eval_sets: list[EvalSetEntry] = Field(
        default_factory=list,
        max_length=MAX_EVAL_SETS,
        description=(
            "Extra held-out sets, each reported on its own as eval_<name>/accuracy (and eval_<name>/avg_pass1 "
            f"with avg@k). A builtin set by name ({', '.join(BENCHMARK_NAMES)}) or as {{name, size, samples}}; "
            "or a file as {name, path, prompt_field, answer_field, size, samples} (server paths: admin keys only)."
        ),
    )
    eval_samples: int = Field(
        0,
        ge=0,
        le=MAX_EVAL_SAMPLES,
        description="k for avg@k Pass@1 with sampling (0: greedy Pass@1 only); an eval set's `samples` overrides it.",
    )
    eval_temperature: float = Field(
        0.6,
        gt=0.0,
        le=10.0,
        description=(
            "Sampling temperature of avg@k evaluation; with rollout.backend 'vllm' and eval_samples > 0 it must "
            f"be in [{VLLM_MIN_TEMPERATURE}, {VLLM_MAX_TEMPERATURE}]."
        ),
    )
    checkpoint_every: int = Field(
        10, ge=1, le=MAX_STEPS, description="Save a checkpoint every K steps (and at the end)."
    )
    keep_checkpoints: int = Field(
        2, ge=1, le=MAX_KEPT_CHECKPOINTS, description="Most recent full checkpoints kept on disk."
    )
    keep_best_checkpoints: int = Field(
        0,
        ge=0,
        le=MAX_KEPT_CHECKPOINTS,
        description="Also keep the k checkpoints with the best greedy eval accuracy; the rest are pruned.",
    )
    log_completions: int = Field(
        4, ge=0, le=MAX_LOGGED_COMPLETIONS, description="Sampled completions recorded per step for inspection."
    )

    @field_validator("eval_sets")
    @classmethod
    def _distinct_eval_set_names(cls, value: list[BuiltinEvalSetSpec | EvalSetSpec]) -> list:
        names = [spec.name for spec in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"eval_sets: names are metric prefixes and must differ; given more than once: {twice}")
        return value

    @field_validator("eval_temperature")
    @classmethod
    def _vllm_evaluates_at_this_temperature(cls, value: float, info: ValidationInfo) -> float:
        rollout, samples = info.data.get("rollout"), info.data.get("eval_samples")
        if rollout is not None and rollout.backend == "vllm" and samples:  # avg@k samples with vLLM
            check_vllm_temperature(value, "eval_temperature")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        alg = self.algorithm
        if alg.name.startswith("remix-") and alg.off_policy_fraction > 0:
            fresh = round((1.0 - alg.off_policy_fraction) * self.rollout.prompts_per_step)
            if fresh < 1:
                raise ValueError(
                    "algorithm.off_policy_fraction leaves no fresh prompt per step: "
                    f"(1 - {alg.off_policy_fraction}) * rollout.prompts_per_step={self.rollout.prompts_per_step} < 1"
                )
        if alg.advantage_estimator == "grpo" and self.rollout.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2 for GRPO group-normalised advantages")
        if self.distributed.strategy == "fsdp" and self.lora.enabled:
            raise ValueError(
                "distributed.strategy 'fsdp' shards full-model training; with lora.enabled the adapters are "
                "small enough for 'ddp'"
            )
        processes = self.distributed.num_processes
        if processes > 1 and self.fewest_fresh_groups < processes:
            raise ValueError(
                f"distributed.num_processes={processes} needs at least {processes} fresh prompt groups per "
                f"step, but a step can have only {self.fewest_fresh_groups}: raise rollout.prompts_per_step "
                "or lower distributed.num_processes"
            )
        return self

    @property
    def fewest_fresh_groups(self) -> int:
        """Fresh prompt groups in a step that replays the most (each training process needs one)."""
        fresh = self.rollout.prompts_per_step
        if self.algorithm.uses_replay:
            fresh -= round(self.algorithm.off_policy_fraction * fresh)
        return fresh


def load_config(data: dict[str, Any]) -> TrainConfig:
    """Validate a plain dict (from YAML/JSON/HTTP) into a TrainConfig."""
    return TrainConfig.model_validate(data)
