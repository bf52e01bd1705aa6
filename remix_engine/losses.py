"""Loss terms of the ReMix objective, as pure functions returning (loss, metrics).

    L = policy_loss (mix_ppg | ppo_clip) + entropy_bonus + kl_convex_loss  [+ value_coef * value_loss]

Every function takes (B, Lr) tensors first and keyword-only knobs, returns a scalar loss and a
dict of python floats, and never logs. Aggregation over tokens is a separate knob (`agg_loss`).

Masking: masked (padding) positions contribute exactly 0 to the loss and get exactly 0 gradient,
even if the inputs hold inf/nan there. Inputs are therefore replaced with `torch.where` *before*
any arithmetic (multiplying by the mask would turn 0 * inf into nan, in the loss or in backward).

Metric conventions: loss-component metrics (pg_loss, entropy, kl_ref, kl_prev, value_loss) use
the configured aggregation; diagnostic metrics (ratio, centre, tv, clip fractions) are plain means
over valid tokens. A metric over an empty mask is 0.0.

References: PPO (Schulman et al. 2017), GePPO (Queeney et al. 2021) for the mix-policy clip
centred at pi_k/pi_behavior, ReMix (arXiv 2507.06892) for KL-Convex, verl `core_algos.py` for
the aggregation modes and the clipped value loss.
"""

from __future__ import annotations

from typing import Protocol

import torch

from remix_engine.kl import kl_estimate
from remix_engine.registry import Registry

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
_LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: keeps ratios finite for wildly off-policy tokens


class PolicyLoss(Protocol):
    def __call__(
        self,
        logp: torch.Tensor,
        old_logp: torch.Tensor,
        behavior_logp: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        *,
        clip_eps: float,
        agg: str,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")


def _valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x on valid tokens, 0 elsewhere; gradient to masked positions is exactly 0."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of x over valid tokens as a python float (0.0 for an empty mask)."""
    count = int(mask.sum())
    if count == 0:
        return 0.0
    return float(_valid(x.detach().double(), mask).sum() / count)


def agg_denominator(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """What `agg_loss` divides by (before clamping to 1): valid tokens, non-empty sequences, or sequences.

    The quantity the processes of a distributed job add up to weight their shares of one loss.
    """
    mask = mask.bool()
    if mode == "token-mean":
        return mask.sum()
    if mode == "seq-mean-token-mean":
        return (mask.sum(dim=-1) > 0).sum()
    if mode == "seq-mean-token-sum":
        return torch.tensor(mask.shape[0], device=mask.device)
    raise ValueError(f"unknown loss aggregation '{mode}'; valid: {', '.join(AGG_MODES)}")


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a (B, Lr) per-token loss to a scalar over the valid tokens of `mask`.

    token-mean:          sum of valid token losses / number of valid tokens in the batch.
    seq-mean-token-mean: mean, over sequences with >= 1 valid token, of each sequence's token mean.
    seq-mean-token-sum:  mean, over all B sequences, of each sequence's token sum.
    An empty mask gives 0, still connected to the graph (backward yields zero gradients).
    """
    denominator = agg_denominator(mask, mode).clamp(min=1)  # also refuses an unknown mode
    mask = mask.bool()
    safe = _valid(loss_mat, mask)  # (B, Lr)
    if mode == "seq-mean-token-mean":
        seq_means = safe.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)  # (B,), 0 for empty rows
        return seq_means.sum() / denominator
    return safe.sum() / denominator


def _clipped_surrogate(
    log_ratio: torch.Tensor,
    log_centre: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """max(-A*r, -A*clip(r, max(c-eps, 0), c+eps)) per token, aggregated. Inputs already sanitised."""
    ratio = torch.exp(log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))  # (B, Lr)
    centre = torch.exp(log_centre.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)).detach()  # (B, Lr)
    lower = (centre - clip_eps).clamp(min=0.0)
    upper = centre + clip_eps
    clipped = torch.maximum(torch.minimum(ratio, upper), lower)  # (B, Lr)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * clipped
    loss = agg_loss(torch.maximum(unclipped_loss, clipped_loss), mask, agg)

    ratio_d = ratio.detach()
    valid_ratios = ratio_d[mask]
    metrics = {
        "pg_loss": float(loss.detach()),
        "clip_frac": _masked_mean((clipped_loss > unclipped_loss).float(), mask),
        "ratio_mean": _masked_mean(ratio_d, mask),
        "ratio_max": float(valid_ratios.max()) if valid_ratios.numel() else 0.0,
        "ratio_min": float(valid_ratios.min()) if valid_ratios.numel() else 0.0,
        "centre_mean": _masked_mean(centre, mask),
        "tv": 0.5 * _masked_mean((ratio_d - centre).abs(), mask),  # GePPO's TV(pi, pi_k) estimate
    }
    return loss, metrics


@POLICY_LOSSES.register("mix_ppg")
def mix_ppg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    behavior_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mix-policy PPG (ReMix Eq. 3, GePPO): ratio against the policy that generated each token.

    logp          (B, Lr) current policy pi_theta (carries the gradient)
    old_logp      (B, Lr) pi_k, the snapshot at the start of this iteration
    behavior_logp (B, Lr) pi_{k-i}, the policy that sampled the token (== old_logp for fresh data)
    r = pi_theta/pi_{k-i}, clip centre c = pi_k/pi_{k-i}, window [max(c - eps, 0), c + eps].
    For fresh data c = 1 and the loss equals PPO's clipped surrogate.
    """
    mask = mask.bool()
    behavior = _valid(behavior_logp.detach(), mask)
    return _clipped_surrogate(
        _valid(logp, mask) - behavior,
        _valid(old_logp.detach(), mask) - behavior,
        _valid(advantages.detach(), mask),
        mask,
        clip_eps=clip_eps,
        agg=agg,
    )


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    behavior_logp: torch.Tensor,  # noqa: ARG001 - shared signature; PPO ignores the behaviour policy
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate: r = pi_theta/pi_old clipped to [1 - eps, 1 + eps]."""
    mask = mask.bool()
    log_ratio = _valid(logp, mask) - _valid(old_logp.detach(), mask)
    return _clipped_surrogate(
        log_ratio,
        torch.zeros_like(log_ratio),
        _valid(advantages.detach(), mask),
        mask,
        clip_eps=clip_eps,
        agg=agg,
    )


def entropy_bonus(
    entropy: torch.Tensor, mask: torch.Tensor, *, coef: float, agg: str
) -> tuple[torch.Tensor, dict[str, float]]:
    """-coef * agg(entropy): a bonus, so minimising the total loss raises entropy (verl sign)."""
    mask = mask.bool()
    mean_entropy = agg_loss(_valid(entropy, mask), mask, agg)
    return -coef * mean_entropy, {"entropy": float(mean_entropy.detach())}


def kl_convex_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    prev_logp: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    lam: float,
    coef: float,
    kind: str,
    agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Convex constraint: coef * agg(lam * KL(pi || ref) + (1 - lam) * KL(pi || prev)).

    ref is pi_base (pi_T after reincarnation), prev the precedent policy pi_{k-1}. A term whose
    weight (or coef) is exactly 0 is skipped, and its log-probs may then be None (saves a forward pass,
    e.g. prev while lambda == 1; its metric is then absent, not a made-up 0). Metrics kl_ref /
    kl_prev are the unweighted aggregated KLs, kl_loss the returned loss.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"KL-Convex lambda must be in [0, 1], got {lam}")
    mask = mask.bool()
    logp = _valid(logp, mask)
    per_token = torch.zeros_like(logp)  # (B, Lr)
    metrics: dict[str, float] = {"lambda": float(lam)}
    for name, anchor, weight in (("kl_ref", ref_logp, lam), ("kl_prev", prev_logp, 1.0 - lam)):
        if anchor is None:
            if weight * coef != 0.0:
                raise ValueError(f"{name}: log-probs are required when its weight is {weight} and coef {coef}")
            continue
        kl = kl_estimate(logp, _valid(anchor.detach(), mask), kind)  # (B, Lr)
        metrics[name] = float(agg_loss(kl.detach(), mask, agg))
        if weight != 0.0:  # skipping a zero-weight term keeps lam in {0, 1} exactly one pure KL
            per_token = per_token + weight * kl
    loss = coef * agg_loss(per_token, mask, agg)
    metrics["kl_loss"] = float(loss.detach())
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float,
    agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped value loss: 0.5 * agg(max((v - R)^2, (clip(v, old - c, old + c) - R)^2))."""
    mask = mask.bool()
    values = _valid(values, mask)
    old_values = _valid(old_values.detach(), mask)
    returns = _valid(returns.detach(), mask)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_err = (values - returns).square()
    clipped_err = (clipped_values - returns).square()
    loss = 0.5 * agg_loss(torch.maximum(unclipped_err, clipped_err), mask, agg)
    return loss, {
        "value_loss": float(loss.detach()),
        "value_clip_frac": _masked_mean((clipped_err > unclipped_err).float(), mask),
    }
