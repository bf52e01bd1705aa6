"""Rollout efficiency: ReMix against its on-policy baseline on a builtin task (`--task`).

For each algorithm and seed, trains the pretrained tiny model and evaluates held-out greedy accuracy
every few steps. Reports, per algorithm: fresh rollouts (responses generated), steps and training
seconds until the target accuracy is first reached, and held-out accuracy once a fixed budget of
fresh rollouts is spent; and, per ReMix/baseline pair, how many times fewer fresh rollouts ReMix
needed. Writes the raw curves (JSON), a table and a plot of accuracy against fresh rollouts and
against training time; a full run also rewrites its section of docs/benchmarks.md.

    python -m benchmarks.rollout_efficiency            # full: 4 algorithms x 3 seeds
    python -m benchmarks.rollout_efficiency --quick    # smoke run: 2 algorithms, 1 seed, 2 steps
    python -m benchmarks.rollout_efficiency --task reasoning --prompts 16 ...   # the reasoning task
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from remix_engine.config import PRESETS
from remix_engine.trainer import Trainer

NAME = "rollout_efficiency"
PAIRS = {"remix-grpo": "grpo", "remix-ppo": "ppo"}
COLORS = {"remix-grpo": "tab:red", "grpo": "tab:blue", "remix-ppo": "tab:orange", "ppo": "tab:cyan"}


def run_one(algorithm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"lambda_start_step": args.reincarnation_step}
    if PRESETS[algorithm].replay:
        overrides |= common.remix_settings(args)
    cfg = common.toy_config_from_args(algorithm, args, seed=seed, steps=args.steps, **overrides)
    recorder = common.TrainingRecorder()
    Trainer(cfg, Path(args.workdir) / f"{algorithm}-seed{seed}", callbacks=recorder).train()
    curve = recorder.points
    within_budget = [p for p in curve if p["fresh_rollouts"] <= args.budget]
    return {
        "seed": seed,
        "curve": curve,
        "reached": common.first_reaching(curve, args.target),
        "accuracy_at_budget": within_budget[-1]["accuracy"],
        "final_accuracy": curve[-1]["accuracy"],
        "median_step_s": common.median([m["step_s"] for m in recorder.steps]),
        "response_length": [m["response_length_fresh"] for m in recorder.steps],
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    def mean_or_none(values: list[float]) -> float | None:
        return statistics.mean(values) if values else None

    rows = []
    for algorithm, results in runs.items():
        hits = [r["reached"] for r in results if r["reached"]]
        all_reached = len(hits) == len(results)
        rows.append(
            {
                "algorithm": algorithm,
                "seeds_reaching_target": f"{len(hits)}/{len(results)}",
                # Means over seeds are only comparable when every seed got there.
                "fresh_rollouts_to_target": mean_or_none([h["fresh_rollouts"] for h in hits]) if all_reached else None,
                "steps_to_target": mean_or_none([h["step"] for h in hits]) if all_reached else None,
                "train_s_to_target": mean_or_none([h["train_s"] for h in hits]) if all_reached else None,
                "median_step_s": common.median([r["median_step_s"] for r in results]),
                "initial_accuracy": statistics.mean(r["curve"][0]["accuracy"] for r in results),
                "accuracy_at_budget": statistics.mean(r["accuracy_at_budget"] for r in results),
                "final_accuracy": statistics.mean(r["final_accuracy"] for r in results),
            }
        )
    return rows


def pair_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each ReMix/baseline pair: baseline rollouts (and time) to target divided by ReMix's."""
    by_name = {r["algorithm"]: r for r in rows}
    out = []
    for remix, baseline in PAIRS.items():
        if remix not in by_name or baseline not in by_name:
            continue
        r, b = by_name[remix], by_name[baseline]
        rollouts = r["fresh_rollouts_to_target"], b["fresh_rollouts_to_target"]
        seconds = r["train_s_to_target"], b["train_s_to_target"]
        out.append(
            {
                "remix": remix,
                "baseline": baseline,
                "rollout_saving": None if None in rollouts else rollouts[1] / rollouts[0],
                "time_ratio": None if None in seconds else seconds[0] / seconds[1],
            }
        )
    return out


def report_body(rows: list[dict[str, Any]], ratios: list[dict[str, Any]], args: argparse.Namespace) -> str:
    setup = (
        f"Setup: {args.prompts} prompts x {args.group_size} responses per step, {args.steps} steps, lr {args.lr:g} "
        f"(constant), max {args.max_new_tokens} new tokens, temperature 1, clip 0.2, KL (k3) 0.001; ReMix "
        f"p={args.p}, N={args.history}, UTD m={args.utd}, reincarnation at step {args.reincarnation_step} "
        f"(lambda schedule from the same step); held-out greedy accuracy on {args.eval_size} prompts every "
        f"{args.eval_every} steps; target {args.target:.0%}; rollout budget {args.budget:,}; seeds {args.seeds}; "
        f"{args.threads} torch thread(s). Training seconds exclude evaluation."
    )
    table = common.markdown_table(
        [
            "algorithm",
            f"seeds reaching {args.target:.0%}",
            "fresh rollouts to target",
            "steps to target",
            "training s to target",
            "median s/step",
            "initial acc",
            f"acc at {args.budget:,} rollouts",
            f"acc after {args.steps} steps",
        ],
        [
            [
                r["algorithm"],
                r["seeds_reaching_target"],
                common.fmt(r["fresh_rollouts_to_target"], "{:,.0f}"),
                common.fmt(r["steps_to_target"], "{:.1f}"),
                common.fmt(r["train_s_to_target"], "{:.1f}"),
                f"{r['median_step_s']:.2f}",
                f"{r['initial_accuracy']:.3f}",
                f"{r['accuracy_at_budget']:.3f}",
                f"{r['final_accuracy']:.3f}",
            ]
            for r in rows
        ],
    )
    lines = []
    for pair in ratios:
        saving, remix, baseline = pair["rollout_saving"], pair["remix"], pair["baseline"]
        if saving is None:
            lines.append(f"- {remix} vs {baseline}: not comparable, a seed missed the {args.target:.0%} target.")
            continue
        time_note = "" if pair["time_ratio"] is None else f", in {pair['time_ratio']:.2f}x its training time"
        comparison = f"{saving:.2f}x fewer" if saving >= 1 else f"{1 / saving:.2f}x more"
        lines.append(
            f"- {remix} reaches {args.target:.0%} with **{comparison}** fresh rollouts than {baseline}{time_note}."
        )
    return f"{setup}\n\n{table}\n\n" + "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict[str, Any]]], path: Path, args: argparse.Namespace) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for algorithm, results in runs.items():
        for i, r in enumerate(results):
            label = algorithm if i == 0 else None
            ys = [p["accuracy"] for p in r["curve"]]
            color = COLORS.get(algorithm, "black")
            axes[0].plot([p["fresh_rollouts"] for p in r["curve"]], ys, color=color, alpha=0.8, label=label)
            axes[1].plot([p["train_s"] for p in r["curve"]], ys, color=color, alpha=0.8, label=label)
    for ax, xlabel in zip(axes, ("fresh rollouts generated", "training time (s)"), strict=True):
        ax.axhline(args.target, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out greedy accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].axvline(args.budget, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(f"ReMix vs on-policy baselines, {common.task_of(args).title} (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 algorithms, 1 seed, 2 tiny steps")
    parser.add_argument("--algorithms", nargs="+", default=["remix-grpo", "grpo", "remix-ppo", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--eval-size", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="the task's limit unless set")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--p", type=float, default=0.4, help="off-policy fraction of ReMix")
    parser.add_argument("--history", type=int, default=2, help="N: policies replayed")
    parser.add_argument("--utd", type=int, default=2, help="m: update-to-data ratio in the Mix phase")
    parser.add_argument("--reincarnation-step", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--budget", type=int, default=4096, help="fresh rollouts after which accuracy is compared")
    common.add_threads_argument(parser)
    common.add_task_argument(parser)
    parser.add_argument("--no-docs", action="store_true", help="write under var/bench/ and leave docs/ alone")
    parser.add_argument("--workdir", default=str(common.QUICK_DIR / NAME / "runs"))
    args = parser.parse_args(argv)
    if args.quick:
        args.algorithms, args.seeds, args.steps, args.eval_every = ["remix-grpo", "grpo"], [0], 2, 1
        args.prompts, args.group_size, args.eval_size, args.reincarnation_step = 4, 4, 8, 2
        args.budget = 16
    common.apply_task_defaults(args)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {}
    for algorithm in args.algorithms:
        for seed in args.seeds:
            result = run_one(algorithm, seed, args)
            runs.setdefault(algorithm, []).append(result)
            print(
                f"{algorithm:>11} seed {seed}: final acc {result['final_accuracy']:.3f}, "
                f"target reached at {result['reached']}",
                flush=True,
            )
    rows = summarise(runs)
    ratios = pair_ratios(rows)
    name = common.report_name(NAME, args)
    data_dir, figures = common.output_paths(name, args.quick or args.no_docs)
    result = {"args": vars(args), "summary": rows, "pairs": ratios, "runs": runs}
    png = figures / f"{name}.png"
    plot(runs, png, args)
    text = report_body(rows, ratios, args)
    report = not (args.quick or args.no_docs)
    common.publish(name, argv, report=report, data_dir=data_dir, data=result, text=text, images=[png])
    return result


if __name__ == "__main__":
    main()
