"""Held-out evaluation: greedy Pass@1 with the job's first (accuracy) reward function."""

from __future__ import annotations

from remix_engine.config import RewardSpec
from remix_engine.rewards import REWARDS


def evaluate_greedy(
    engine: object, prompts: list[str], answers: list[str], spec: RewardSpec, max_new_tokens: int
) -> dict[str, float]:
    completions: list[str] = engine.greedy(prompts, max_new_tokens)  # type: ignore[attr-defined]
    scores = REWARDS.get(spec.name)(completions, answers, **spec.kwargs)
    correct = [bool(s is not None and s > 0) for s in scores]
    lengths = [len(c) for c in completions]
    n = max(len(prompts), 1)
    return {
        "accuracy": sum(correct) / n,
        "num_prompts": float(len(prompts)),
        "mean_completion_chars": sum(lengths) / n,
    }
