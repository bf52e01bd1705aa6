"""Memory pre-flight: will a job fit on one accelerator, and if not, which knob to turn.

`estimate_memory(cfg, model_config)` counts, per process, in bytes:
  resident:  policy weights; the KL anchor, the precedent policy pi_{t-1} and the pi_t snapshot
             (whole-model copies, or adapter-sized with LoRA); gradients and AdamW's two moments
             of the trained weights; for PPO the critic (backbone copy, its gradients and moments).
  learner:   activations kept for backward for one minibatch of (prompt + response) tokens, about
             34 * B * L * hidden bytes per layer at 16 bits (Korthikanti et al. 2022, attention
             matrices excluded as SDPA/flash kernels never store them), and the logits of the
             response positions: the model-dtype output plus three float32 (B, Lr, V) tensors
             (tempered logits, log-softmax, probabilities for the entropy).
  rollout:   the KV cache of generation_batch_size sequences of max_prompt_tokens + max_new_tokens,
             and the sampler's per-step float32 (B, V) buffers.
The learner and the rollout alternate, so total = resident + max(learner, rollout). These are
estimates, meant to refuse jobs that cannot fit with an actionable message, not to pack a GPU to
the last megabyte; `check_fits` therefore keeps a headroom for the CUDA context and fragmentation.

The model shape (remix_engine/model_shape.py) comes from a transformers config (`AutoConfig.from_pretrained`,
no weights), a plain config.json dict, or a bare parameter count (then only the weight-sized terms
are known: a lower bound). This module does not import torch or transformers: the HTTP API runs
`check_fits` with `offline_model_shape(cfg.model)` (builtin models, local folders, hub ids already in
the local Hugging Face cache; never the network) before it accepts a job.

With `rollout.backend: vllm` the rollout's working memory is vLLM's own pool,
`rollout.vllm.gpu_memory_utilization` of the device; with its sleep mode the pool is released while
the learner runs (so it alternates with the learner), without it the pool stays allocated.

Deliberately omitted: mixture-of-experts and vision towers (counted as a dense text decoder),
activation checkpointing, the CUDA caching allocator's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remix_engine.config import TrainConfig
from remix_engine.model_shape import ModelShape, load_model_config

GiB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FP32 = 4
ACTIVATION_BYTES_PER_TOKEN_HIDDEN_16BIT = 34  # per layer, Korthikanti et al. 2022, no recomputation
LOGIT_FP32_COPIES = 3  # tempered logits, log-softmax, softmax (entropy)
SAMPLER_FP32_BUFFERS = 4  # filtered log-probs, uniform noise, Gumbel noise, scores
ADAM_MOMENTS = 2
DEFAULT_HEADROOM = 0.10  # of the available memory, for the CUDA context and fragmentation


class InsufficientMemoryError(RuntimeError):
    """The job does not fit; the message names the largest terms and the knobs that shrink them."""

    def __init__(self, message: str, estimate: MemoryEstimate, available_bytes: int) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.available_bytes = available_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    learner_bytes: int  # resident state + the learner's working memory for one minibatch
    rollout_bytes: int  # the rollout's working memory: KV cache and sampling buffers
    total: int  # resident + max(learner working memory, rollout working memory)
    breakdown: dict[str, int] = field(default_factory=dict)

    def largest(self, count: int = 3) -> list[tuple[str, int]]:
        return sorted(self.breakdown.items(), key=lambda kv: -kv[1])[:count]


def estimate_memory(
    cfg: TrainConfig, model_config: Any, *, world_size: int = 1, device_bytes: int | None = None
) -> MemoryEstimate:
    """Bytes per process for `cfg` on the model described by a transformers config or a parameter count.

    With world_size > 1 every process holds its share of each step's rollouts and minibatches;
    with the 'fsdp' strategy gradients, optimizer moments and the frozen policy copies are sharded, and
    the learner's sharded copy of the weights comes on top of the full weights every process keeps.
    `device_bytes` (the accelerator's memory) sizes vLLM's pool for `rollout.backend: vllm`.
    """
    shape = _shape_of(model_config)
    resident = _resident_bytes(cfg, shape, world_size)
    learner = _learner_work_bytes(cfg, shape, world_size)
    rollout = _rollout_work_bytes(cfg, shape, world_size)
    if cfg.rollout.backend == "vllm" and device_bytes is not None:
        pool = int(cfg.rollout.vllm.gpu_memory_utilization * device_bytes)
        rollout = {"vllm_pool": pool}  # vLLM's copy of the weights, its KV cache and buffers
        if not cfg.rollout.vllm.enable_sleep_mode:  # allocated all the time
            resident = {**resident, **rollout}
            rollout = {}
    resident_total = sum(resident.values())
    return MemoryEstimate(
        learner_bytes=resident_total + sum(learner.values()),
        rollout_bytes=sum(rollout.values()),
        total=resident_total + max(sum(learner.values()), sum(rollout.values())),
        breakdown={**resident, **learner, **rollout},
    )


def _shape_of(model_config: Any) -> ModelShape:
    if isinstance(model_config, ModelShape):
        return model_config
    if isinstance(model_config, int):
        return ModelShape(num_params=model_config)
    return ModelShape.from_config(model_config)


def _resident_bytes(cfg: TrainConfig, shape: ModelShape, world_size: int) -> dict[str, int]:
    p = DTYPE_BYTES[cfg.model.dtype]
    n = shape.num_params
    trained = shape.lora_params(cfg.lora.r, cfg.lora.target_modules) if cfg.lora.enabled else n
    # FSDP: the learner trains a sharded copy (weights, gradients, moments split over the processes)
    # beside the full weights each process keeps for rollouts and scoring passes; the policy copies
    # are sharded too.
    fsdp = cfg.distributed.strategy == "fsdp" and world_size > 1
    shard = world_size if fsdp else 1
    out = {
        "policy_weights": n * p,
        # Copies of the trained weights: KL anchor, precedent pi_{t-1}, and the pi_t snapshot of a step.
        "policy_copies": 3 * trained * p // shard,
        "gradients": trained * p // shard,
        "optimizer_states": ADAM_MOMENTS * trained * p // shard,
    }
    if fsdp:
        out["sharded_weights"] = trained * p // shard
    if cfg.algorithm.advantage_estimator == "gae":
        # The critic copies the transformer body; an untied LM head is not part of it.
        head = 0 if shape.tied_embeddings or not shape.known else shape.vocab_size * shape.hidden_size  # type: ignore[operator]  # a known shape has every size
        backbone = n - head
        critic_trained = trained if cfg.lora.enabled else backbone
        sharded_copy = critic_trained * p // shard if fsdp else 0
        out["critic"] = backbone * p + sharded_copy + (1 + ADAM_MOMENTS) * critic_trained * p // shard
    return out


def _learner_work_bytes(cfg: TrainConfig, shape: ModelShape, world_size: int) -> dict[str, int]:
    if not shape.known:
        return {}
    p = DTYPE_BYTES[cfg.model.dtype]
    rows = -(-min(cfg.algorithm.minibatch_size, _rows_per_step(cfg)) // world_size)
    seq = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    per_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN_16BIT * rows * seq * shape.hidden_size * p // 2  # type: ignore[operator]  # a known shape has every size
    positions = rows * (cfg.rollout.max_new_tokens + 1)
    logits = positions * shape.vocab_size * (p + LOGIT_FP32_COPIES * FP32)  # type: ignore[operator]  # a known shape has every size
    return {"activations": shape.num_layers * per_layer, "logits": logits}  # type: ignore[operator]  # a known shape has every size


def _rollout_work_bytes(cfg: TrainConfig, shape: ModelShape, world_size: int = 1) -> dict[str, int]:
    if not shape.known:
        return {}
    p = DTYPE_BYTES[cfg.model.dtype]
    # Each process samples its share of the step's responses, generation_batch_size at a time.
    rows = min(cfg.rollout.generation_batch_size, -(-_rows_per_step(cfg) // world_size))
    seq = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    kv_per_token = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * p  # type: ignore[operator]  # a known shape has every size
    return {
        "kv_cache": rows * seq * kv_per_token,
        "sampling_buffers": rows * shape.vocab_size * SAMPLER_FP32_BUFFERS * FP32,  # type: ignore[operator]  # a known shape has every size
    }


def _rows_per_step(cfg: TrainConfig) -> int:
    return cfg.rollout.prompts_per_step * cfg.rollout.group_size


def check_fits(
    cfg: TrainConfig,
    available_bytes: int,
    model_config: Any = None,
    *,
    world_size: int = 1,
    headroom: float = DEFAULT_HEADROOM,
    device_bytes: int | None = None,
) -> MemoryEstimate:
    """The estimate if it fits in (1 - headroom) * available_bytes; else InsufficientMemoryError.

    model_config defaults to the job's own model config, read without weights (`load_model_config`).
    `device_bytes` is the device's total memory (vLLM sizes its pool from it); default available_bytes.
    """
    if model_config is None:
        model_config = load_model_config(cfg.model)
    device = available_bytes if device_bytes is None else device_bytes
    estimate = estimate_memory(cfg, model_config, world_size=world_size, device_bytes=device)
    budget = int(available_bytes * (1.0 - headroom))
    if estimate.total <= budget:
        return estimate
    largest = ", ".join(f"{name} {_gib(size)}" for name, size in estimate.largest())
    message = (
        f"job needs about {_gib(estimate.total)} per device but {_gib(available_bytes)} is available "
        f"({_gib(budget)} after {headroom:.0%} headroom); largest: {largest}. "
        f"To fit: {'; '.join(_suggestions(cfg, estimate))}"
    )
    raise InsufficientMemoryError(message, estimate, available_bytes)


def _suggestions(cfg: TrainConfig, estimate: MemoryEstimate) -> list[str]:
    b = estimate.breakdown
    weight_terms = sum(b.get(k, 0) for k in ("policy_copies", "gradients", "optimizer_states", "critic"))
    tips: list[tuple[int, str]] = [
        (
            b.get("activations", 0) + b.get("logits", 0),
            f"lower algorithm.minibatch_size (now {cfg.algorithm.minibatch_size})",
        ),
        (
            b.get("kv_cache", 0) + b.get("sampling_buffers", 0),
            f"lower rollout.generation_batch_size (now {cfg.rollout.generation_batch_size}) "
            f"or rollout.max_new_tokens (now {cfg.rollout.max_new_tokens})",
        ),
        (
            b.get("vllm_pool", 0),
            f"lower rollout.vllm.gpu_memory_utilization (now {cfg.rollout.vllm.gpu_memory_utilization})"
            + ("" if cfg.rollout.vllm.enable_sleep_mode else " or set rollout.vllm.enable_sleep_mode: true"),
        ),
    ]
    if not cfg.lora.enabled:
        tips.append((weight_terms, "enable LoRA (lora.enabled: true) to train adapters, not all weights"))
    if cfg.model.dtype == "float32":
        tips.append((b.get("policy_weights", 0) + weight_terms, "use model.dtype bfloat16"))
    return [text for size, text in sorted(tips, key=lambda t: -t[0]) if size > 0]


def _gib(size: int) -> str:
    return f"{size / GiB:.2f} GiB"
