"""Composing rewards: the weighted total of a job's reward specs, each reward's scores and per-sample
errors (``<name>/errors`` flags), and the per-reward step metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remix_engine.config import RewardSpec
from remix_engine.rewards.functions import REWARDS, check_lengths
from remix_engine.rewards.rows import rows_for

ERRORS_SUFFIX = "/errors"


def _unique_key(name: str, taken: Mapping[str, object]) -> str:
    """``name``, or ``name#2``, ``name#3``... when the same reward appears more than once."""
    key, index = name, 1
    while key in taken:
        index += 1
        key = f"{name}#{index}"
    return key


@dataclass
class RewardResult:
    """Scores of a batch: the weighted total, each reward's unweighted scores and its per-sample errors.

    Keys of ``parts`` and ``errors`` are the reward names in the order of the specs (``name#2`` for a
    repeat). ``errors`` has every key (None for a sample that did not fail); ``reporting`` holds the keys
    of the rewards that can fail on a sample (``python``, ``string_check``, ``judge``).
    """

    total: list[float]
    parts: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str | None]] = field(default_factory=dict)
    reporting: list[str] = field(default_factory=list)

    def per_fn(self) -> dict[str, list[float]]:
        """``parts`` plus ``<name>/errors`` flags (1.0 = failed) for the rewards that report errors."""
        out = dict(self.parts)
        for key in self.reporting:
            out[f"{key}{ERRORS_SUFFIX}"] = [float(error is not None) for error in self.errors[key]]
        return out


def score_rewards(
    specs: Sequence[RewardSpec],
    completions: list[str],
    answers: list[str],
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> RewardResult:
    """Weighted sum of the rewards in ``specs``, with each reward's scores and errors.

    ``None`` (not applicable, or failed) counts as 0.0 both in ``parts`` and in the sum.
    """
    check_lengths(completions, answers)
    sample_rows = rows_for(rows, len(completions))
    result = RewardResult(total=[0.0] * len(completions))
    for spec in specs:
        raw = REWARDS.get(spec.name)(completions, answers, rows=sample_rows, **spec.kwargs)
        if len(raw) != len(completions):
            raise ValueError(f"reward {spec.name!r} returned {len(raw)} scores for {len(completions)} completions")
        scores = [0.0 if score is None else float(score) for score in raw]
        key = _unique_key(spec.name, result.parts)
        result.parts[key] = scores
        errors = getattr(raw, "errors", None)  # rewards that can fail on one sample report it
        if errors is not None:
            result.reporting.append(key)
            result.errors[key] = [None if error is None else str(error) for error in errors]
        else:
            result.errors[key] = [None] * len(completions)
        result.total = [acc + spec.weight * score for acc, score in zip(result.total, scores, strict=True)]
    return result


def compose_rewards(
    specs: Sequence[RewardSpec],
    completions: list[str],
    answers: list[str],
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of the rewards in ``specs``.

    Returns ``(total, per_fn)``: ``per_fn`` maps each reward name (``name#2`` for a repeat) to its
    unweighted scores, in the order of ``specs`` (the first one defines accuracy). ``None``
    (not applicable) counts as 0.0 both in ``per_fn`` and in the sum. A reward that reports
    per-sample errors (``python``, ``string_check``, ``judge``) adds ``<name>/errors`` flags (1.0 = failed).
    """
    result = score_rewards(specs, completions, answers, rows)
    return result.total, result.per_fn()


def count_reward_errors(per_fn: dict[str, list[float]]) -> int:
    """Samples whose reward failed (the ``<name>/errors`` entries of ``compose_rewards``)."""
    return int(sum(sum(flags) for key, flags in per_fn.items() if key.endswith(ERRORS_SUFFIX)))


def reward_metrics(
    per_fn: dict[str, list[float]], all_sum: Callable[[float], float] = lambda value: value
) -> dict[str, float]:
    """Step metrics of each reward: ``reward/<name>/mean`` (unweighted) and ``reward/<name>/error_rate``
    (the fraction of samples it failed on; 0 for rewards that cannot fail).

    ``all_sum`` adds a number over the processes of a distributed job (each scores its own shard);
    every process calls it in the same order.
    """
    count = all_sum(float(max((len(v) for v in per_fn.values()), default=0)))
    metrics: dict[str, float] = {}
    for key, scores in per_fn.items():
        if key.endswith(ERRORS_SUFFIX):
            continue
        flags = per_fn.get(f"{key}{ERRORS_SUFFIX}")
        total, failed = all_sum(float(sum(scores))), all_sum(float(sum(flags)) if flags else 0.0)
        metrics[f"reward/{key}/mean"] = total / count if count else 0.0
        metrics[f"reward/{key}/error_rate"] = failed / count if count else 0.0
    return metrics
