"""Rewards of a step's fresh rollouts: the weighted reward sum, accuracy, and the reward report.

The reward functions run in the isolated scoring child (scoring.py); this module puts what they return
on the batch (`rewards`, `correct`, `rows`, `is_replay`) and reports per-function means and errors,
summed over the processes of a distributed job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import RewardConfig
from remix_engine.data import Example
from remix_engine.prompts import completions_for_rewards
from remix_engine.rewards import count_reward_errors, reward_metrics, reward_row
from remix_engine.scoring import compose_rewards_isolated


def score_rollouts(
    batch: RolloutBatch,
    examples: Sequence[Example],
    group_size: int,
    reward: RewardConfig,
    all_sum: Callable[[float], float],
) -> dict[str, float]:
    """Score `batch` (groups of responses to `examples`, in order) in place; returns the reward report.

    `rewards` is the weighted sum (0 for truncated responses under reward.overlong 'zero', before
    advantages), `correct` whether the first reward function scored above 0 (accuracy, as scored).
    """
    device = batch.response_ids.device
    rows = [reward_row(ex.prompt, ex.extra) for ex in examples]  # the rewards see each sample's row
    batch.rows = [rows[i] for i in range(len(examples)) for _ in range(group_size)]
    completions = completions_for_rewards(batch.prompts, batch.completions)
    total, per_fn = compose_rewards_isolated(reward.functions, completions, batch.answers, batch.rows)
    batch.rewards = torch.tensor(total, dtype=torch.float32, device=device)
    if reward.overlong == "zero":
        batch.rewards = batch.rewards.masked_fill(batch.truncated_rows, 0.0)
    first = per_fn[reward.functions[0].name]
    batch.correct = torch.tensor([s > 0 for s in first], dtype=torch.bool, device=device)
    batch.is_replay = torch.zeros(len(batch), dtype=torch.bool, device=device)
    return {"reward_errors": int(all_sum(count_reward_errors(per_fn))), **reward_metrics(per_fn, all_sum)}
