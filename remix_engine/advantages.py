"""Advantage estimators, all with one signature: fn(batch, *, cfg) -> (advantages, metrics).

advantages is (B, Lr), zero on masked tokens; metrics are python floats computed over valid tokens.
  grpo: outcome reward normalised within its prompt group, (R - mean_g) / (std_g + 1e-6) with the
        unbiased std (verl `compute_grpo_outcome_advantage`), broadcast to every valid token.
        A group of size 1 has no peer to serve as a baseline: its advantage is 0 (a deliberate
        departure from verl, which uses mean 0 / std 1 there and so passes the raw reward through).
  gae:  outcome reward on each response's last valid token, per-token GAE from the critic values
        (V after the last token = 0), whitened over the valid tokens of the batch (verl
        `masked_whiten`). The trainer gets the matching returns from `gae_returns`.
Replayed samples keep the advantages stored when they were generated (decided by the trainer);
no V-trace recomputation happens here.
"""

from __future__ import annotations

from typing import Protocol

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import AlgorithmConfig
from remix_engine.registry import Registry

GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8


class AdvantageEstimator(Protocol):
    def __call__(self, batch: RolloutBatch, *, cfg: AlgorithmConfig) -> tuple[torch.Tensor, dict[str, float]]: ...


ADVANTAGES: Registry[AdvantageEstimator] = Registry("advantage estimator")


def _require(batch: RolloutBatch, name: str, estimator: str) -> torch.Tensor:
    value: torch.Tensor | None = getattr(batch, name)
    if value is None:
        raise ValueError(f"advantage estimator '{estimator}' needs batch.{name}; it is None")
    return value


def _token_metrics(advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    valid = advantages.detach()[mask].double()
    if valid.numel() == 0:
        return {"adv_mean": 0.0, "adv_std": 0.0, "frac_negative_adv": 0.0}
    return {
        "adv_mean": float(valid.mean()),
        "adv_std": float(valid.std(unbiased=False)),
        "frac_negative_adv": float((valid < 0).double().mean()),
    }


def group_normalized_scores(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = GRPO_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R - mean_g) / (std_g + eps) per response (float64), and a (G,) bool "group has no spread".

    rewards (B,) float, group_ids (B,) integer labels. std is unbiased (torch.std). A group whose
    rewards are all equal (size-1 groups included) scores exactly 0: computing it as a tiny
    deviation over a tiny std would turn rounding noise into an O(1e-2) advantage in float32.
    """
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite to compute advantages")
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    num_groups = counts.shape[0]
    r = rewards.to(torch.float64)  # (B,)
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=r.device)  # (G,)
    means = zeros.index_add(0, inverse, r) / counts
    deviations = r - means[inverse]  # (B,)
    stds = (zeros.index_add(0, inverse, deviations.square()) / (counts - 1).clamp(min=1)).sqrt()  # (G,)
    group_max = zeros.scatter_reduce(0, inverse, r, "amax", include_self=False)
    group_min = zeros.scatter_reduce(0, inverse, r, "amin", include_self=False)
    no_spread = group_max == group_min  # (G,)
    scores = torch.where(no_spread[inverse], 0.0, deviations / (stds[inverse] + eps))
    return scores, no_spread


@ADVANTAGES.register("grpo")
def grpo_advantages(batch: RolloutBatch, *, cfg: AlgorithmConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-normalised outcome advantages broadcast to valid response tokens."""
    del cfg  # GRPO has no knobs; the argument keeps the shared signature
    rewards = _require(batch, "rewards", "grpo")  # (B,)
    mask = batch.response_mask.bool()  # (B, Lr)
    scores, no_spread = group_normalized_scores(rewards, batch.group_ids)
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    advantages = torch.where(mask, scores.to(dtype).unsqueeze(1), 0.0)  # (B, Lr)
    metrics = _token_metrics(advantages, mask)
    metrics["frac_zero_std_groups"] = float(no_spread.double().mean()) if no_spread.numel() else 0.0
    return advantages, metrics


def _outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, Lr) zeros with each response's reward on its last valid token."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, Lr)
    last = torch.where(mask, positions, -1).max(dim=1).values  # (B,), -1 for empty responses
    token_rewards = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    has_tokens = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_tokens]
    token_rewards[rows, last[has_tokens]] = rewards[has_tokens]
    return token_rewards


def gae_returns(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unwhitened GAE advantages and returns (= advantages + values), both (B, Lr), 0 on masked tokens.

    rewards (B,) outcome reward placed on the last valid token; values (B, Lr) critic values.
    The recursion runs backwards over valid tokens only (masked positions are skipped, so any
    mask shape works), with V and A after a response's last token equal to 0.
    """
    mask = mask.bool()
    rewards = rewards.to(values.dtype)
    values = torch.where(mask, values, 0.0)  # nan/inf padding is harmless
    token_rewards = _outcome_token_rewards(rewards, mask)  # (B, Lr)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        valid = mask[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        gae = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(valid, gae, torch.zeros_like(gae))
        next_advantage = torch.where(valid, gae, next_advantage)
        next_value = torch.where(valid, values[:, t], next_value)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over valid tokens (unbiased var, as verl); 0 on masked tokens."""
    mask = mask.bool()
    count = int(mask.sum())
    if count == 0:
        return torch.zeros_like(x)
    mean = torch.where(mask, x, 0.0).sum() / count
    centred = torch.where(mask, x - mean, 0.0)
    var = centred.square().sum() / max(count - 1, 1)
    return centred * torch.rsqrt(var + eps)


@ADVANTAGES.register("gae")
def gae_advantages(batch: RolloutBatch, *, cfg: AlgorithmConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Whitened GAE advantages from outcome rewards and critic values (PPO)."""
    rewards = _require(batch, "rewards", "gae")  # (B,)
    values = _require(batch, "values", "gae")  # (B, Lr)
    mask = batch.response_mask.bool()
    raw, returns = gae_returns(rewards, values, mask, cfg.gae_gamma, cfg.gae_lambda)
    advantages = masked_whiten(raw, mask)
    metrics = _token_metrics(advantages, mask)
    metrics["raw_adv_mean"] = _token_metrics(raw, mask)["adv_mean"]
    metrics["returns_mean"] = _token_metrics(returns, mask)["adv_mean"]
    return advantages, metrics
