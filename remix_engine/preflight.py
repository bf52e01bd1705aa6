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

The model shape comes from a transformers config (`AutoConfig.from_pretrained`, no weights), a plain
config.json dict, or a bare parameter count (then only the weight-sized terms are known: a lower
bound). This module does not import torch or transformers: the HTTP API runs `check_fits` with
`offline_model_shape(cfg.model)` (builtin models, local folders, hub ids already in the local
Hugging Face cache; never the network) before it accepts a job.

With `rollout.backend: vllm` the rollout's working memory is vLLM's own pool,
`rollout.vllm.gpu_memory_utilization` of the device; with its sleep mode the pool is released while
the learner runs (so it alternates with the learner), without it the pool stays allocated.

Deliberately omitted: mixture-of-experts and vision towers (counted as a dense text decoder),
activation checkpointing, the CUDA caching allocator's rounding.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remix_engine.config import TINY_CHAT_MODEL_ID, TINY_MODEL_ID, ModelConfig, TrainConfig

log = logging.getLogger(__name__)

GiB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FP32 = 4
ACTIVATION_BYTES_PER_TOKEN_HIDDEN_16BIT = 34  # per layer, Korthikanti et al. 2022, no recomputation
LOGIT_FP32_COPIES = 3  # tempered logits, log-softmax, softmax (entropy)
SAMPLER_FP32_BUFFERS = 4  # filtered log-probs, uniform noise, Gumbel noise, scores
ADAM_MOMENTS = 2
DEFAULT_HEADROOM = 0.10  # of the available memory, for the CUDA context and fragmentation
# Architectures whose MLP has two matrices (up, down); the others are gated (gate, up, down).
_UNGATED_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode", "starcoder2"}
# config.json names of the same quantity in other architectures (transformers' attribute_map).
_CONFIG_ALIASES = {
    "hidden_size": ("n_embd", "d_model"),
    "num_hidden_layers": ("n_layer", "num_layers"),
    "num_attention_heads": ("n_head", "num_heads"),
    "intermediate_size": ("n_inner", "ffn_dim"),
}
# The builtin tiny Llama (remix_engine/toy.py: build_untrained_model), described without torch.
TINY_MODEL_CONFIG = {
    "model_type": "llama",
    "vocab_size": 101,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,  # toy.MAX_POSITIONS: bounds vLLM's context (context_length.py)
    "tie_word_embeddings": True,
}
# The builtin tiny chat model (remix_engine/toy_chat.py: MODEL_SIZES on the Qwen2.5-Instruct stand-in, whose
# 1024 BPE tokens + 22 added ones are padded to 1152 embedding rows), described without torch.
TINY_CHAT_MODEL_CONFIG = {
    "model_type": "qwen2",
    "vocab_size": 1152,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,  # toy_chat.MODEL_SIZES: bounds vLLM's context (context_length.py)
    "tie_word_embeddings": True,
}
BUILTIN_MODEL_CONFIGS = {TINY_MODEL_ID: TINY_MODEL_CONFIG, TINY_CHAT_MODEL_ID: TINY_CHAT_MODEL_CONFIG}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class InsufficientMemoryError(RuntimeError):
    """The job does not fit; the message names the largest terms and the knobs that shrink them."""

    def __init__(self, message: str, estimate: MemoryEstimate, available_bytes: int) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.available_bytes = available_bytes


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only transformer."""

    num_params: int
    hidden_size: int | None = None
    num_layers: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool = False

    @property
    def known(self) -> bool:
        return self.hidden_size is not None

    @staticmethod
    def from_config(config: Any) -> ModelShape:
        """Dense decoder parameter count from a transformers config (Llama, Qwen, Mistral, GPT-2, ...)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(text.hidden_size)
        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
        intermediate = int(getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden)
        vocab = int(text.vocab_size)
        mlp_matrices = 2 if getattr(text, "model_type", "") in _UNGATED_MLP else 3
        attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
        per_layer = attention + mlp_matrices * hidden * intermediate + 2 * hidden  # + two norms
        tied = bool(getattr(text, "tie_word_embeddings", False))
        embeddings = vocab * hidden * (1 if tied else 2)
        return ModelShape(
            num_params=embeddings + layers * per_layer + hidden,  # + final norm
            hidden_size=hidden,
            num_layers=layers,
            intermediate_size=intermediate,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            tied_embeddings=tied,
        )

    @staticmethod
    def from_dict(config: dict[str, Any]) -> ModelShape:
        """The shape from a config.json as a plain dict (no transformers needed)."""
        return ModelShape.from_config(_DictConfig(config))

    def lora_params(self, r: int, target_modules: list[str]) -> int:
        """Adapter parameters: r * (fan_in + fan_out) per targeted matrix per layer."""
        if not self.known:
            raise ValueError("LoRA memory estimates need the model config, not only a parameter count")
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim  # type: ignore[operator]
        fans = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        per_layer = sum(r * sum(fans.get(name, (h, h))) for name in target_modules)  # type: ignore[arg-type]
        return self.num_layers * per_layer  # type: ignore[operator]


class _DictConfig:
    """Attribute access to a config.json dict, with the common aliases and a nested text_config."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__["_data"]
        for key in (name, *_CONFIG_ALIASES.get(name, ())):
            if data.get(key) is not None:
                return data[key]
        if name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            raise AttributeError(f"config.json has no {name}")
        return None

    def get_text_config(self) -> _DictConfig:
        text = self._data.get("text_config")
        return _DictConfig({**self._data, **text}) if isinstance(text, dict) else self


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
        head = 0 if shape.tied_embeddings or not shape.known else shape.vocab_size * shape.hidden_size  # type: ignore[operator]
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
    per_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN_16BIT * rows * seq * shape.hidden_size * p // 2  # type: ignore[operator]
    positions = rows * (cfg.rollout.max_new_tokens + 1)
    logits = positions * shape.vocab_size * (p + LOGIT_FP32_COPIES * FP32)  # type: ignore[operator]
    return {"activations": shape.num_layers * per_layer, "logits": logits}  # type: ignore[operator]


def _rollout_work_bytes(cfg: TrainConfig, shape: ModelShape, world_size: int = 1) -> dict[str, int]:
    if not shape.known:
        return {}
    p = DTYPE_BYTES[cfg.model.dtype]
    # Each process samples its share of the step's responses, generation_batch_size at a time.
    rows = min(cfg.rollout.generation_batch_size, -(-_rows_per_step(cfg) // world_size))
    seq = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    kv_per_token = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * p  # type: ignore[operator]
    return {
        "kv_cache": rows * seq * kv_per_token,
        "sampling_buffers": rows * shape.vocab_size * SAMPLER_FP32_BUFFERS * FP32,  # type: ignore[operator]
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


def load_model_config(model_cfg: ModelConfig) -> Any:
    """The transformers config of the job's model, without downloading weights.

    Hub ids and local folders go through AutoConfig; the builtin tiny model's architecture is
    built from its definition (which imports torch; it is small enough never to need a check).
    """
    name = model_cfg.name_or_path
    if name == TINY_MODEL_ID:
        from remix_engine.toy import build_char_tokenizer, build_untrained_model

        return build_untrained_model(build_char_tokenizer(), seed=0).config
    from transformers import AutoConfig

    if name == TINY_CHAT_MODEL_ID:
        config = dict(TINY_CHAT_MODEL_CONFIG)
        return AutoConfig.for_model(config.pop("model_type"), **config)

    return AutoConfig.from_pretrained(name, trust_remote_code=model_cfg.trust_remote_code)


def offline_model_config(model_cfg: ModelConfig) -> dict[str, Any] | None:
    """The model's config.json as a dict when it can be read here without network, torch or transformers.

    Builtin models are known; a local folder is read directly; a hub id is looked up in the local
    Hugging Face cache only. None when the config is not available (or not a JSON object): the caller
    then skips its check, and the worker's own checks still run before training.
    """
    name = model_cfg.name_or_path
    if name in BUILTIN_MODEL_CONFIGS:
        return dict(BUILTIN_MODEL_CONFIGS[name])
    if name.startswith("builtin:"):
        return None
    path = _local_config_path(name)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.info("cannot read the config of %s from %s (%s)", name, path, error)
        return None
    return data if isinstance(data, dict) else None


def offline_model_shape(model_cfg: ModelConfig) -> ModelShape | None:
    """The model's shape from `offline_model_config`; None when that is unavailable or not understood."""
    data = offline_model_config(model_cfg)
    if data is None:
        return None
    try:
        return ModelShape.from_dict(data)
    except (ValueError, TypeError, AttributeError, ZeroDivisionError) as error:
        log.info("memory pre-flight skipped: cannot read the shape of %s (%s)", model_cfg.name_or_path, error)
        return None


def _local_config_path(name: str) -> Path | None:
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return folder / "config.json"
    if not _HUB_ID.match(name) or ".." in name:
        return None
    from huggingface_hub import try_to_load_from_cache  # no network: the cache only

    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached) if isinstance(cached, str) else None
