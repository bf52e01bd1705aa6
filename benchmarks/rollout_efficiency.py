"""Rollout efficiency: ReMix vs its on-policy baseline on the builtin addition task.

For each algorithm and seed, trains the pretrained tiny model and evaluates held-out greedy
accuracy every few steps. Reports, per algorithm, the fresh rollouts (responses generated) and
wall time until the target accuracy is first reached, and the final accuracy; writes a JSON of
all curves, a markdown table and a plot of accuracy against fresh rollouts.

    python benchmarks/rollout_efficiency.py                 # full: 4 algorithms x 3 seeds
    python benchmarks/rollout_efficiency.py --quick         # smoke run: 2 algorithms, 1 seed, few steps
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from remix_engine.config import TINY_MODEL_ID, TrainConfig
from remix_engine.trainer import Trainer


class CurveRecorder:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.points: list[dict[str, float]] = []
        self.steps: list[dict[str, Any]] = []

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        self.steps.append(dict(metrics))
        if "eval_accuracy" in metrics:
            self.points.append(
                {
                    "step": step,
                    "fresh_rollouts": float(metrics["fresh_rollouts_total"]),
                    "wall_s": time.perf_counter() - self.started,
                    "accuracy": float(metrics["eval_accuracy"]),
                }
            )

    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None:
        if kind == "evaluation" and step == 0:
            self.points.append(
                {"step": 0, "fresh_rollouts": 0.0, "wall_s": 0.0, "accuracy": float(payload["accuracy"])}
            )

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def job_config(
    algorithm: str, seed: int, steps: int, eval_every: int, args: argparse.Namespace
) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": TINY_MODEL_ID},
            "data": {"eval_size": args.eval_size},
            "rollout": {
                "prompts_per_step": args.prompts,
                "group_size": args.group_size,
                "max_new_tokens": 16,
            },
            "algorithm": {
                "name": algorithm,
                "off_policy_fraction": args.p,
                "history_window": args.history,
                "utd_ratio": args.utd,
                "reincarnation_step": args.reincarnation_step,
                "lambda_start_step": args.reincarnation_step,
                "minibatch_size": args.prompts * args.group_size,
            },
            "optim": {"lr": args.lr, "critic_lr": args.lr},
            "total_steps": steps,
            "eval_every": eval_every,
            "checkpoint_every": steps,
            "keep_checkpoints": 1,
            "log_completions": 0,
            "seed": seed,
        }
    )


def first_reaching(points: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((p for p in points if p["accuracy"] >= target), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {}
    for algorithm in args.algorithms:
        for seed in args.seeds:
            recorder = CurveRecorder()
            cfg = job_config(algorithm, seed, args.steps, args.eval_every, args)
            out = Path(args.workdir) / f"{algorithm}-seed{seed}"
            Trainer(cfg, out, callbacks=recorder).train()
            hit = first_reaching(recorder.points, args.target)
            runs.setdefault(algorithm, []).append(
                {
                    "seed": seed,
                    "curve": recorder.points,
                    "reached": hit,
                    "final_accuracy": recorder.points[-1]["accuracy"],
                    "response_length": [m["response_length_fresh"] for m in recorder.steps],
                    "self_reflection": [m.get("kw_appear_self_reflection", 0.0) for m in recorder.steps],
                }
            )
            print(
                f"{algorithm:>11} seed {seed}: final acc {recorder.points[-1]['accuracy']:.3f}, "
                f"target reached: {hit}",
                flush=True,
            )
    return {"args": vars(args), "machine": machine(), "runs": runs}


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for algorithm, runs in result["runs"].items():
        hits = [r["reached"] for r in runs if r["reached"]]
        rows.append(
            {
                "algorithm": algorithm,
                "seeds_reaching_target": f"{len(hits)}/{len(runs)}",
                "fresh_rollouts_to_target": statistics.mean(h["fresh_rollouts"] for h in hits)
                if hits
                else None,
                "wall_s_to_target": statistics.mean(h["wall_s"] for h in hits) if hits else None,
                "steps_to_target": statistics.mean(h["step"] for h in hits) if hits else None,
                "final_accuracy": statistics.mean(r["final_accuracy"] for r in runs),
                "initial_accuracy": statistics.mean(r["curve"][0]["accuracy"] for r in runs),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], target: float) -> str:
    def fmt(value: Any, pattern: str) -> str:
        return "not reached" if value is None else pattern.format(value)

    lines = [
        f"| algorithm | seeds reaching {target:.0%} | fresh rollouts to target | steps to target | "
        "wall s to target | initial acc | final acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {r['seeds_reaching_target']} | {fmt(r['fresh_rollouts_to_target'], '{:,.0f}')} | "
            f"{fmt(r['steps_to_target'], '{:.1f}')} | {fmt(r['wall_s_to_target'], '{:.1f}')} | "
            f"{r['initial_accuracy']:.3f} | {r['final_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for algorithm, runs in result["runs"].items():
        for i, r in enumerate(runs):
            xs = [p["fresh_rollouts"] for p in r["curve"]]
            ys = [p["accuracy"] for p in r["curve"]]
            axes[0].plot(xs, ys, color=_color(algorithm), alpha=0.8, label=algorithm if i == 0 else None)
            axes[1].plot(
                [p["wall_s"] for p in r["curve"]],
                ys,
                color=_color(algorithm),
                alpha=0.8,
                label=algorithm if i == 0 else None,
            )
    for ax, xlabel in zip(axes, ("fresh rollouts generated", "wall time (s)"), strict=True):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out greedy accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("ReMix vs on-policy baselines, 2-digit addition, tiny Llama (one line per seed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _color(algorithm: str) -> str:
    return {"remix-grpo": "tab:red", "grpo": "tab:blue", "remix-ppo": "tab:orange", "ppo": "tab:cyan"}.get(
        algorithm, "black"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--algorithms", nargs="+", default=["remix-grpo", "grpo", "remix-ppo", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--eval-size", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--p", type=float, default=0.4)
    parser.add_argument("--history", type=int, default=2)
    parser.add_argument("--utd", type=int, default=2)
    parser.add_argument("--reincarnation-step", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="var/bench/rollout_efficiency")
    parser.add_argument("--out", default="docs/benchmarks/rollout_efficiency")
    args = parser.parse_args(argv)
    if args.quick:
        args.algorithms, args.seeds, args.steps, args.eval_every = ["remix-grpo", "grpo"], [0], 2, 1
        args.prompts, args.group_size, args.eval_size, args.reincarnation_step = 8, 4, 20, 1
        args.out = str(Path(args.workdir) / "quick")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    rows = summarise(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**result, "summary": rows}, indent=2))
    table = markdown_table(rows, args.target)
    out.with_suffix(".md").write_text(table + "\n")
    plot(result, out.with_suffix(".png"), args.target)
    print(table)
    return result


if __name__ == "__main__":
    main()
