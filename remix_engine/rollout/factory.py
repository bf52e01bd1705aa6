"""`build_engine`: the rollout engine `rollout.backend` names, built from what it needs of the trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from remix_engine.config import ModelConfig, RolloutConfig
from remix_engine.rollout.engine import RolloutEngine
from remix_engine.rollout.hf import HFRolloutEngine
from remix_engine.rollout.vllm import NamedWeights, VLLMRolloutEngine


def build_engine(
    cfg: RolloutConfig,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    max_prompt_tokens: int | None = None,
    model_cfg: ModelConfig | None = None,
    weights: Callable[[], NamedWeights] | None = None,
    seed: int = 0,
    device: torch.device | str = "cuda",
) -> RolloutEngine:
    """The engine of `cfg.backend` sampling from `model`.

    The HF engine generates with `model` itself and needs nothing more. The vLLM engine loads its own copy
    of the checkpoint `model_cfg` names (seeded with `seed`, on `device`) and follows the learner through
    `weights`, the learner's current weights under the base model's names (merged with LoRA).
    """
    if cfg.backend == "hf":
        return HFRolloutEngine(model, tokenizer, cfg, max_prompt_tokens=max_prompt_tokens)
    if cfg.backend == "vllm":
        if model_cfg is None or weights is None:
            raise ValueError("rollout.backend 'vllm' needs the model config and the learner's weights")
        return VLLMRolloutEngine(
            model,
            tokenizer,
            cfg,
            model_cfg=model_cfg,
            weights=weights,
            max_prompt_tokens=max_prompt_tokens,
            seed=seed,
            device=device,
        )
    raise ValueError(f"unknown rollout.backend {cfg.backend!r}")
