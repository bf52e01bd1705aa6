"""Each benchmark's --quick mode runs end to end and writes its results, table and plot.

The scripts run as subprocesses (as a user runs them) with their quick outputs redirected to a
temporary directory, so the repository's docs/ and var/ are left alone. Speed is not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_quick(module: str, out: Path, *extra: str) -> None:
    env = {**os.environ, "REMIX_BENCH_QUICK_DIR": str(out)}
    completed = subprocess.run(
        [sys.executable, "-m", module, "--quick", *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def outputs(out: Path, name: str, *, plot: bool = True) -> dict[str, Any]:
    """The benchmark's JSON, after checking its JSON, table and (with `plot`) PNG were written."""
    folder = out / name
    for suffix in (".json", ".md", ".png") if plot else (".json", ".md"):
        path = folder / f"{name}{suffix}"
        assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    if plot:
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((folder / f"{name}.json").read_text())


def test_rollout_efficiency_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.rollout_efficiency", tmp_path, "--workdir", str(tmp_path / "runs"))
    result = outputs(tmp_path, "rollout_efficiency")
    assert set(result["runs"]) == {"remix-grpo", "grpo"}
    rows = {row["algorithm"]: row for row in result["summary"]}
    for row in rows.values():
        assert 0.0 <= row["accuracy_at_budget"] <= 1.0 and row["median_step_s"] > 0
    remix_curve = result["runs"]["remix-grpo"][0]["curve"]
    assert [p["step"] for p in remix_curve] == [0, 1, 2]  # evaluated before training and every step
    # The second step replays half of the batch, so ReMix generated fewer fresh rollouts than grpo.
    grpo_curve = result["runs"]["grpo"][0]["curve"]
    assert remix_curve[-1]["fresh_rollouts"] < grpo_curve[-1]["fresh_rollouts"]
    assert [pair["remix"] for pair in result["pairs"]] == ["remix-grpo"]


def test_the_reasoning_task_keeps_its_own_results(tmp_path: Path) -> None:
    run_quick("benchmarks.rollout_efficiency", tmp_path, "--task", "reasoning", "--workdir", str(tmp_path / "runs"))
    result = outputs(tmp_path, "rollout_efficiency_reasoning")
    assert not (tmp_path / "rollout_efficiency").exists()  # the addition task's results are left alone
    assert result["args"]["task"] == "reasoning" and result["args"]["max_new_tokens"] == 96
    lengths = [length for run in result["runs"]["grpo"] for length in run["response_length"]]
    assert sum(lengths) / len(lengths) > 20  # worked answers, not the addition task's 12 tokens


def test_analysis_signals_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.analysis_signals", tmp_path)
    result = outputs(tmp_path, "analysis_signals")
    rows = {row["variant"]: row for row in result["ablation"]}
    assert set(rows) == {"full", "no-raised-utd", "no-kl-convex", "no-reincarnation", "plain-mix-ppg", "grpo-baseline"}
    budget = result["args"]["budget"]
    for row in rows.values():  # every variant spent (at least) the same fresh-rollout budget
        assert row["fresh_rollouts"] >= budget
        assert 0.0 <= row["final_accuracy"] <= 1.0
    mix = result["signals"]["mix"]
    assert mix["response_length_replay"] is not None  # replay happened in the Mix phase
    assert all(mix[f"replay_ratio_{q}"] is not None for q in ("q1", "q2", "q3", "q4"))
    assert mix["kw_appear_self_reflection"] is not None
    assert result["signals"]["on-policy"]["response_length_replay"] is None  # no replay after reincarnation


def test_trl_comparison_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.trl_comparison", tmp_path)
    result = outputs(tmp_path, "trl_comparison")
    rows = {row["system"]: row for row in result["summary"]}
    assert set(rows) == {"trl-grpo", "grpo", "remix-grpo"}
    steps = result["args"]["steps"]
    for system, runs in result["runs"].items():
        for run in runs:
            assert len(run["step_s"]) == steps, system
            assert run["curve"][0]["step"] == 0 and run["curve"][-1]["step"] == steps, system
    assert all(row["median_step_s"] > 0 for row in rows.values())


def test_engine_throughput_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.engine_throughput", tmp_path)
    result = outputs(tmp_path, "engine_throughput")
    assert {r["algorithm"] for r in result["results"]} == {"grpo", "remix-grpo"}
    assert {r["backend"] for r in result["results"]} == {"hf"}  # the default; vllm needs CUDA
    for row in result["results"]:
        assert row["generation_tokens_per_s"] > 0 and row["learner_tokens_per_s"] > 0
        assert row["peak_rss_mib"] >= row["rss_after_load_mib"] > 0
        phases = row["breakdown_s"]
        assert sum(phases.values()) == pytest.approx(row["step_s"], rel=1e-6)
        assert phases["generation"] > 0 and phases["learner"] > 0
    remix = next(r for r in result["results"] if r["algorithm"] == "remix-grpo")
    assert remix["breakdown_s"]["replay bookkeeping"] > 0


def test_learner_speed_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.learner_speed", tmp_path)
    result = outputs(tmp_path, "learner_speed", plot=False)
    medians = result["medians"]
    assert set(medians) == {"grpo", "remix-grpo"}
    for algorithm, parts in medians.items():
        for part in ("generation", "behaviour_logprobs", "reference_logprobs", "learner", "step"):
            assert parts[part] > 0, (algorithm, part)
        timed = sum(parts[part] for part in ("generation", "behaviour_logprobs", "reference_logprobs", "learner"))
        assert timed <= parts["step"] * (1 + 1e-6), algorithm  # the parts are within the step
        assert 0 < parts["response_length_fresh"] <= result["args"]["max_new_tokens"]
    assert "| remix-grpo |" in (tmp_path / "learner_speed" / "learner_speed.md").read_text()


def test_micro_batch_update_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.micro_batch_update", tmp_path)
    result = outputs(tmp_path, "micro_batch_update", plot=False)
    budgets = [None if b == "none" else int(b) for b in result["args"]["budgets"]]
    assert None in budgets and len(budgets) > 1  # one forward over the minibatch, and bucketed budgets
    rows = result["results"]
    assert [(row["model"], row["micro_batch_tokens"]) for row in rows] == [("tiny", b) for b in budgets]
    for row in rows:
        assert row["update_s"] > 0 and row["logprob_pass_s"] > 0, row


def test_generation_cache_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.generation_cache", tmp_path)
    result = outputs(tmp_path, "generation_cache", plot=False)
    variants = result["results"]
    assert set(variants) == {"dynamic", "static"}  # static+compile only with --compile
    assert variants["static"]["same_tokens_as_dynamic"] is True  # the static cache samples the same tokens
    for row in variants.values():
        assert row["median_s"] > 0 and row["tokens_per_s"] > 0


@pytest.mark.postgres
def test_api_load_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.api_load", tmp_path)
    result = outputs(tmp_path, "api_load")
    create, read = result["http"].values()
    assert create["statuses"] == {"202": result["args"]["creates"]}
    assert read["statuses"] == {"200": result["args"]["reads"]}
    assert create["p99_ms"] >= create["p50_ms"] > 0
    for row in result["ingest"]:
        assert row["rows"] == row["writers"] * result["args"]["ingest_steps"]
        assert row["rows_per_s"] > 0


@pytest.mark.postgres
def test_api_reads_quick(tmp_path: Path) -> None:
    run_quick("benchmarks.api_reads", tmp_path)
    result = outputs(tmp_path, "api_reads")
    runs = result["results"]
    assert len(runs) == 4 and all(len(endpoint) == result["args"]["runs"] for endpoint in runs.values())
    for endpoint in runs.values():
        for run in endpoint:
            assert run["statuses"] == {"200": run["requests"]}  # every read authenticated and answered
            assert run["p99_ms"] >= run["p50_ms"] > 0 and run["achieved_rps"] > 0
