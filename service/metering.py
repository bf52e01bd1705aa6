"""What one training step consumed, from the metrics the trainer reports for it (remix_engine/trainer.py).

The trainer reports rates and durations rather than token counts, so the counts are derived from them:
generated tokens = gen_tokens_per_s x rollout_s (the step's fresh response tokens), trained tokens =
learner_tokens_per_s x learner_s (response tokens of the learner batch, fresh and replayed, once per
pass over it), device-seconds = step_s x the job's training processes. Counts reported directly under
`generated_tokens` / `trained_tokens` take precedence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _number(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


def _count(metrics: Mapping[str, Any], key: str, rate: str, seconds: str) -> int:
    if key in metrics:
        return round(_number(metrics, key))
    return round(_number(metrics, rate) * _number(metrics, seconds))


def step_usage(metrics: Mapping[str, Any], *, devices: int = 1) -> dict[str, int | float]:
    """{fresh_rollouts, generated_tokens, trained_tokens, device_seconds} of one step's metrics."""
    return {
        "fresh_rollouts": round(_number(metrics, "fresh_samples")),
        "generated_tokens": _count(metrics, "generated_tokens", "gen_tokens_per_s", "rollout_s"),
        "trained_tokens": _count(metrics, "trained_tokens", "learner_tokens_per_s", "learner_s"),
        "device_seconds": _number(metrics, "step_s") * max(1, devices),
    }
