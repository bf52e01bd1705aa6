"""Held-out evaluation with the job's first (accuracy) reward function.

- Greedy Pass@1: one greedy completion per prompt.
- avg@k Pass@1: k sampled completions per prompt at the evaluation temperature, the mean
  correctness over all of them (how the paper reports AIME/AMC), plus pass@k (any correct).
Extra evaluation sets (benchmark files) are reported under their own name prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remix_engine.config import RewardSpec
from remix_engine.data import Example
from remix_engine.prompt_template import render_prompt
from remix_engine.rewards import reward_row
from remix_engine.sampling import response_seed

EVAL_SEED_STEP = -1  # seeds of evaluation samples never collide with training samples


@dataclass(frozen=True)
class EvalSet:
    name: str  # "" for the primary held-out set
    prompts: list[str]
    answers: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # what the reward sees of each row

    @staticmethod
    def from_examples(name: str, examples: list[Example], template: str) -> EvalSet:
        return EvalSet(
            name,
            [render_prompt(template, e.prompt) for e in examples],
            [e.answer for e in examples],
            [reward_row(e.prompt, e.extra) for e in examples],
        )


def _correct(
    spec: RewardSpec, completions: list[str], answers: list[str], rows: list[dict[str, Any]] | None = None
) -> list[bool]:
    from remix_engine.scoring import compose_rewards_isolated

    _total, per_fn = compose_rewards_isolated([spec], completions, answers, rows or None)
    return [score > 0 for score in per_fn[spec.name]]


def evaluate_greedy(
    engine: object,
    prompts: list[str],
    answers: list[str],
    spec: RewardSpec,
    max_new_tokens: int,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    completions: list[str] = engine.greedy(prompts, max_new_tokens)  # type: ignore[attr-defined]
    correct = _correct(spec, completions, answers, rows)
    n = max(len(prompts), 1)
    return {
        "accuracy": sum(correct) / n,
        "num_prompts": float(len(prompts)),
        "mean_completion_chars": sum(len(c) for c in completions) / n,
    }


def evaluate_sampled(
    engine: object,
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
    batch = engine.generate(  # type: ignore[attr-defined]
        prompts,
        answers,
        list(range(len(prompts))),
        group_size=k,
        seeds=seeds,
        policy_version=0,
        group_id_start=0,
    )
    sample_rows = [row for row in rows for _ in range(k)] if rows else None  # responses i*k..i*k+k-1
    correct = _correct(spec, batch.completions, batch.answers, sample_rows)
    per_prompt = [correct[i * k : (i + 1) * k] for i in range(len(prompts))]
    n = max(len(prompts), 1)
    return {
        "avg_pass1": sum(sum(c) for c in per_prompt) / (n * k),
        "pass_at_k": sum(any(c) for c in per_prompt) / n,
        "k": float(k),
    }


def evaluate_sets(
    engine: object,
    sets: list[EvalSet],
    spec: RewardSpec,
    *,
    max_new_tokens: int,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Greedy (and, when samples > 0, avg@k) results; keys of extra sets get a '<name>/' prefix."""
    results: dict[str, float] = {}
    for eval_set in sets:
        prefix = f"{eval_set.name}/" if eval_set.name else ""
        rows = eval_set.rows or None
        found = evaluate_greedy(engine, eval_set.prompts, eval_set.answers, spec, max_new_tokens, rows)
        if samples > 0:
            found.update(
                evaluate_sampled(engine, eval_set.prompts, eval_set.answers, spec, k=samples, seed=seed, rows=rows)
            )
        results.update({f"{prefix}{key}": value for key, value in found.items()})
    return results
