"""Held-out evaluation with the job's first (accuracy) reward function.

- Greedy Pass@1: one greedy completion per prompt.
- avg@k Pass@1: k sampled completions per prompt at the evaluation temperature, the mean
  correctness over all of them (how the paper reports AIME/AMC), plus pass@k (any correct).
Extra evaluation sets (builtin benchmarks, files) are reported under their own name prefix, each
with its own k (an eval set's `samples`, else the job's `eval_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remix_engine.config import RewardSpec
from remix_engine.prompts import completions_for_rewards
from remix_engine.sampling import response_seed

if TYPE_CHECKING:
    from remix_engine.rollout.engine import RolloutEngine

EVAL_SEED_STEP = -1  # seeds of evaluation samples never collide with training samples


@dataclass(frozen=True)
class EvalSet:
    name: str  # "" for the primary held-out set
    prompts: list[str]
    answers: list[str]
    samples: int | None = None  # k of avg@k for this set; None: evaluate_sets' `samples`
    rows: list[dict[str, Any]] = field(default_factory=list)  # what the reward sees of each row


def _correct(
    spec: RewardSpec, completions: list[str], answers: list[str], rows: list[dict[str, Any]] | None = None
) -> list[bool]:
    from remix_engine.scoring import compose_rewards_isolated

    _total, per_fn = compose_rewards_isolated([spec], completions, answers, rows or None)
    return [score > 0 for score in per_fn[spec.name]]


def evaluate_greedy(
    engine: RolloutEngine,
    prompts: list[str],
    answers: list[str],
    spec: RewardSpec,
    max_new_tokens: int,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    completions: list[str] = engine.greedy(prompts, max_new_tokens)
    correct = _correct(spec, completions_for_rewards(prompts, completions), answers, rows)
    n = max(len(prompts), 1)
    return {
        "accuracy": sum(correct) / n,
        "num_prompts": float(len(prompts)),
        "mean_completion_chars": sum(len(c) for c in completions) / n,
    }


def evaluate_sampled(
    engine: RolloutEngine,
    prompts: list[str],
    answers: list[str],
    spec: RewardSpec,
    *,
    k: int,
    seed: int,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """avg@k Pass@1 and pass@k; the engine samples with its configured max length and filters."""
    seeds = [response_seed(seed, EVAL_SEED_STEP, i, j) for i in range(len(prompts)) for j in range(k)]
    batch = engine.generate(
        prompts,
        answers,
        list(range(len(prompts))),
        group_size=k,
        seeds=seeds,
        policy_version=0,
        group_id_start=0,
    )
    group_prompts = [prompt for prompt in prompts for _ in range(k)]  # the batch is k responses per prompt
    sample_rows = [row for row in rows for _ in range(k)] if rows else None  # responses i*k..i*k+k-1
    seen = completions_for_rewards(group_prompts, batch.completions)
    correct = _correct(spec, seen, batch.answers, sample_rows)
    per_prompt = [correct[i * k : (i + 1) * k] for i in range(len(prompts))]
    n = max(len(prompts), 1)
    return {
        "avg_pass1": sum(sum(c) for c in per_prompt) / (n * k),
        "pass_at_k": sum(any(c) for c in per_prompt) / n,
        "k": float(k),
    }


def evaluate_sets(
    engine: RolloutEngine,
    sets: list[EvalSet],
    spec: RewardSpec,
    *,
    max_new_tokens: int,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Greedy (and, when k > 0, avg@k) results; keys of extra sets get a '<name>/' prefix.

    k is the set's own `samples` when it has one, else `samples`.
    """
    results: dict[str, float] = {}
    for eval_set in sets:
        prefix = f"{eval_set.name}/" if eval_set.name else ""
        k = samples if eval_set.samples is None else eval_set.samples
        rows = eval_set.rows or None
        found = evaluate_greedy(engine, eval_set.prompts, eval_set.answers, spec, max_new_tokens, rows)
        if k > 0:
            found.update(
                evaluate_sampled(engine, eval_set.prompts, eval_set.answers, spec, k=k, seed=seed, rows=rows)
            )
        results.update({f"{prefix}{key}": value for key, value in found.items()})
    return results
