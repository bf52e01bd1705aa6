"""Per-token estimators of KL(pi || ref) from log-probs of the sampled tokens.

With x = ref_logp - logp (log of pi_ref/pi at the sampled token, a ~ pi):
  k1 = -x = logp - ref_logp            unbiased, high variance, can be negative
  k2 = 0.5 * x**2                      biased, always >= 0
  k3 = exp(x) - x - 1                  unbiased, always >= 0 (verl "low_var_kl")
k3 follows verl's `low_var_kl`: x is clamped to [-20, 20] before the exponent and the
result to [-10, 10]. It is computed with expm1 so tiny differences stay >= 0 in float32.
Reference: J. Schulman, "Approximating KL Divergence" (2020). No KL controllers live here:
the coefficient is a fixed config value (beta), applied by the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_K3_LOG_RATIO_CLAMP = 20.0
_K3_OUTPUT_CLAMP = 10.0


def _k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


def _k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp).square()


def _k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    log_ratio = (ref_logp - logp).clamp(-_K3_LOG_RATIO_CLAMP, _K3_LOG_RATIO_CLAMP)
    # expm1(x) - x == exp(x) - 1 - x, without the cancellation of exp(x) - 1 near x = 0.
    kl = torch.expm1(log_ratio) - log_ratio
    return kl.clamp(-_K3_OUTPUT_CLAMP, _K3_OUTPUT_CLAMP)


_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate, same shape as `logp` (e.g. (B, Lr)). Not masked."""
    try:
        estimator = _ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown KL estimator '{kind}'; valid: {', '.join(_ESTIMATORS)}") from None
    return estimator(logp, ref_logp)
