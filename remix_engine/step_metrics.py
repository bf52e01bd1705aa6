"""What a training step reports: where its seconds went, its metrics row, replayed rows' importance
ratios, and sampled completions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.behavior import keyword_rates

Metrics = dict[str, float | int | str]


class StepTimer:
    """Seconds spent in each named part of a step (`with timer("generation"): ...`)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def total(self) -> float:
        return time.perf_counter() - self.started


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else 0.0


def batch_metrics(fresh: RolloutBatch, replay: RolloutBatch | None, step: int) -> Metrics:
    """Rewards, accuracy, lengths and truncation of the step's fresh rows; lengths and age of replayed ones."""
    # The trainer scores and log-probs every fresh row before its metrics are taken.
    assert fresh.rewards is not None and fresh.correct is not None and fresh.behavior_logp is not None
    lengths = fresh.response_lengths.float()
    metrics: Metrics = {
        "reward_mean": float(fresh.rewards.mean()),
        "reward_std": float(fresh.rewards.std()) if len(fresh) > 1 else 0.0,
        "accuracy": float(fresh.correct.float().mean()),
        "response_length_fresh": float(lengths.mean()),
        "response_length_fresh_correct": _masked_mean(lengths, fresh.correct),
        "response_length_fresh_incorrect": _masked_mean(lengths, ~fresh.correct),
        "fresh_samples": len(fresh),
        "truncated_fraction": float(fresh.truncated_rows.float().mean()) if len(fresh) else 0.0,
        "replayed_samples": 0 if replay is None else len(replay),
        "rollout_logp_mismatch_max": float(
            ((fresh.rollout_logp - fresh.behavior_logp).abs() * fresh.response_mask).max()
        ),
    }
    if replay is not None:
        metrics["response_length_replay"] = float(replay.response_lengths.float().mean())
        metrics["replay_policy_age_mean"] = float((step - replay.policy_version).float().mean())
    metrics.update({f"kw_{k}": v for k, v in keyword_rates(fresh.completions).items()})
    return metrics


POSITION_QUARTILES = ("q1", "q2", "q3", "q4")


def replay_ratio_stats(logp: torch.Tensor, mb: RolloutBatch) -> dict[str, float]:
    """Importance ratios pi_theta/pi_behaviour on replayed tokens: overall, early vs late in the
    response, and per quarter of the response (mean ratio and mean |log ratio|, the drift by position)."""
    if mb.is_replay is None or not bool(mb.is_replay.any()):
        return {}
    rows = mb.is_replay
    assert mb.behavior_logp is not None  # replayed rows keep the log-probs they were stored with
    mask = mb.response_mask[rows].bool()
    log_ratio = (logp[rows] - mb.behavior_logp[rows]).clamp(-20, 20)  # (R, Lr)
    ratio = torch.exp(log_ratio)
    position = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    lengths = mb.response_lengths[rows].unsqueeze(1)  # (R, 1)
    late = mask & (position * 2 >= lengths)
    early = mask & ~late
    stats = {"replay_ratio_mean": float(ratio[mask].mean()), "replay_ratio_max": float(ratio[mask].max())}
    if bool(early.any()) and bool(late.any()):
        stats["replay_ratio_first_half"] = float(ratio[early].mean())
        stats["replay_ratio_second_half"] = float(ratio[late].mean())
    quarter = (position * len(POSITION_QUARTILES)) // lengths.clamp(min=1)  # 0..3 on valid tokens
    for index, name in enumerate(POSITION_QUARTILES):
        selected = mask & (quarter == index)
        if bool(selected.any()):
            stats[f"replay_ratio_{name}"] = float(ratio[selected].mean())
            stats[f"replay_abs_log_ratio_{name}"] = float(log_ratio[selected].abs().mean())
    return stats


def sampled_completions(fresh: RolloutBatch, count: int) -> list[dict[str, Any]]:
    """The first `count` fresh completions with their prompt, answer, reward and truncation flag."""
    assert fresh.rewards is not None  # fresh rows are scored before they are sampled for the log
    return [
        {
            "prompt": fresh.prompts[i],
            "completion": fresh.completions[i],
            "answer": fresh.answers[i],
            "reward": float(fresh.rewards[i]),
            "truncated": bool(fresh.truncated_rows[i]),  # hit max_new_tokens without EOS or a stop string
        }
        for i in range(min(count, len(fresh)))
    ]
