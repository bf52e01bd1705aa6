"""Capture and restore of everything a resumed job needs to take the next step an uninterrupted job would.

Saved beside the policy's Hugging Face weights in each checkpoint folder (checkpoint.py): the learner's
optimizer states, critic and policy copies, the replay buffer, the prompt sampler, every random
generator the trainer draws from, the step, the fresh-rollout count, the reincarnation step and the
evaluation before training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from remix_engine.learner import PolicyLearner
from remix_engine.replay import ReplayBuffer
from remix_engine.sampling import PromptSampler


@dataclass
class Progress:
    """The trainer's counters: what a checkpoint restores beside the learner and the data streams."""

    step: int = 0
    fresh_rollouts: int = 0
    reincarnated_at: int | None = None
    eval_before: dict[str, float] = field(default_factory=dict)


def capture_state(
    learner: PolicyLearner,
    buffer: ReplayBuffer,
    sampler: PromptSampler,
    generator: torch.Generator,
    progress: Progress,
) -> dict[str, Any]:
    """The trainer state of a checkpoint (collective under FSDP: every process calls it)."""
    return {
        **learner.state_dict(anchor_moved=progress.reincarnated_at is not None),
        "step": progress.step,
        "replay": buffer.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": random.getstate()},
        "fresh_rollouts": progress.fresh_rollouts,
        "reincarnated_at": progress.reincarnated_at,
        "eval_before": progress.eval_before,
    }


def restore_state(
    state: dict[str, Any],
    checkpoint_dir: Path,
    learner: PolicyLearner,
    buffer: ReplayBuffer,
    sampler: PromptSampler,
    generator: torch.Generator,
) -> Progress:
    """Inverse of `capture_state`, with the policy read from the checkpoint folder; returns the counters."""
    learner.load_state_dict(state, checkpoint_dir)
    buffer.load_state_dict(state["replay"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["generator"])
    random.setstate(state["rng"]["python"])
    return Progress(
        step=int(state["step"]),
        fresh_rollouts=int(state["fresh_rollouts"]),
        reincarnated_at=state["reincarnated_at"],
        eval_before=dict(state["eval_before"]),
    )
