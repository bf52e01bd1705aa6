"""The pieces of `Trainer.train_step`, called one at a time on a real trainer, for tests that inspect
a step's intermediate batches."""

from __future__ import annotations

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.policy_update import UpdatePlan, update_policy
from remix_engine.rollout_scoring import score_rollouts
from remix_engine.step_batch import advantaged_fresh, mixed_batch
from remix_engine.trainer import Trainer


def scored_rollout(trainer: Trainer, step: int, num_prompts: int) -> RolloutBatch:
    """`num_prompts` fresh groups of step `step`, generated and scored."""
    fresh, examples = trainer.generate(step, num_prompts)
    score_rollouts(fresh, examples, trainer.cfg.rollout.group_size, trainer.cfg.reward, trainer.dist.all_sum)
    return fresh


def prepare_fresh(trainer: Trainer, fresh: RolloutBatch) -> RolloutBatch:
    """Behaviour log-probs, values and advantages of scored fresh rows (the whole step's batch)."""
    pad = trainer.tokenizer.pad_token_id
    scored, _ = advantaged_fresh(
        trainer.learner, fresh, trainer.alg, trainer.cfg.rollout.group_size, pad, behaviour_pass=True
    )
    return scored


def reference_batch(trainer: Trainer, fresh: RolloutBatch, replay: RolloutBatch | None, lam: float) -> RolloutBatch:
    """The mixed batch with old, anchor and precedent log-probs, from separate no-grad passes."""
    return mixed_batch(
        trainer.learner, fresh, replay, trainer.alg, lam, trainer.tokenizer.pad_token_id, fill_pi_k=False
    )


def update(trainer: Trainer, batch: RolloutBatch, lam: float, epochs: int) -> dict[str, float]:
    """One learner update of `batch` with the trainer's settings."""
    return update_policy(
        trainer.learner,
        batch,
        UpdatePlan(epochs=epochs, lam=lam),
        alg=trainer.alg,
        temperature=trainer.cfg.rollout.temperature,
        exclude_truncated=trainer.cfg.reward.overlong == "mask",
        generator=trainer.generator,
    )


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
