"""A step's usage derived from the trainer's step metrics (service/metering.py)."""

from __future__ import annotations

from service.metering import step_usage


def test_counts_are_derived_from_rates_and_durations() -> None:
    metrics = {"fresh_samples": 64, "gen_tokens_per_s": 2048.0, "rollout_s": 0.25, "learner_tokens_per_s": 900.0}
    metrics |= {"learner_s": 2.0, "step_s": 3.0}
    assert step_usage(metrics, devices=4) == {
        "fresh_rollouts": 64,
        "generated_tokens": 512,
        "trained_tokens": 1800,
        "device_seconds": 12.0,
    }


def test_reported_counts_win_and_missing_or_non_finite_values_count_zero() -> None:
    metrics = {"generated_tokens": 77, "gen_tokens_per_s": 1e9, "rollout_s": 1.0, "step_s": float("nan")}
    assert step_usage(metrics) == {
        "fresh_rollouts": 0,
        "generated_tokens": 77,
        "trained_tokens": 0,
        "device_seconds": 0.0,
    }
    assert step_usage({"fresh_samples": True, "step_s": -1})["device_seconds"] == 0.0
