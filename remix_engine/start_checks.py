"""Refusals at job start, before any weights load: what this worker cannot run is refused now, not mid-job."""

from __future__ import annotations

import logging

import torch

from remix_engine.config import TrainConfig
from remix_engine.context_length import check_vllm_context, model_position_limit
from remix_engine.judge import check_judge
from remix_engine.model_shape import load_model_config
from remix_engine.preflight import check_fits
from remix_engine.reward_specs import JUDGE_REWARDS
from remix_engine.rollout import check_backend_available
from remix_engine.sandbox import check_sandbox

log = logging.getLogger(__name__)


def refuse_what_cannot_run(config: TrainConfig, device: torch.device, world_size: int) -> None:
    """Checks before any weights load: backend, reward sandbox and judge, context length, GPU memory."""
    check_backend_available(config.rollout, device)  # e.g. vLLM without CUDA
    if any(spec.name == "python" for spec in config.reward.functions):
        log.info("reward sandbox: %s", check_sandbox())  # a worker that cannot jail it refuses now
    if any(spec.name in JUDGE_REWARDS for spec in config.reward.functions):
        check_judge()  # a worker without a judge endpoint refuses now
    model_config = None
    if device.type == "cuda" or config.rollout.backend == "vllm":
        model_config = load_model_config(config.model)  # its config only: no weights yet
    # vLLM refuses prompts as long as its context, which the model's positions bound.
    check_vllm_context(config, model_position_limit(model_config))
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        need = check_fits(config, free, model_config, world_size=world_size, device_bytes=total)
        log.info("memory pre-flight: about %.2f GiB of %.2f GiB free", need.total / 2**30, free / 2**30)
