"""The paper's analysis signals and an ablation of remix-grpo on a builtin task (`--task`).

Signals, recorded every step of the full remix-grpo runs:
- response length of fresh and of replayed responses over training;
- importance ratio pi_theta / pi_behaviour on replayed tokens by relative position in the response
  (quartiles; the trainer itself logs halves, `replay_ratio_first_half/second_half`);
- self-reflection keyword rates of fresh responses (the trainer's `kw_*` metrics).

Ablation, each variant trained until the same budget of fresh rollouts is spent, then evaluated:
full remix-grpo, without the raised UTD ratio (utd_ratio=1), without KL-Convex (kl_coef=0), without
policy reincarnation (reincarnation_step=null), plain Mix-PPG (replay only: UTD 1, no KL, no
reincarnation), and the on-policy grpo baseline for reference.

    python -m benchmarks.analysis_signals            # full run (~10 minutes on 2 CPU cores)
    python -m benchmarks.analysis_signals --quick    # seconds; writes under var/bench/
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from remix_engine.step_metrics import POSITION_QUARTILES as QUARTILES
from remix_engine.trainer import Trainer

NAME = "analysis_signals"
KEYWORD_CATEGORIES = (
    "self_reflection",
    "hypotheticals",
    "branching_analysis",
    "uncertainty_markers",
    "meta_cognition",
)
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-raised-utd": {"utd_ratio": 1},
    "no-kl-convex": {"kl_coef": 0.0},
    "no-reincarnation": {"reincarnation_step": None},
    # Mix-PPG alone: replay with its importance correction, none of the three other parts.
    "plain-mix-ppg": {"utd_ratio": 1, "kl_coef": 0.0, "reincarnation_step": None},
    "grpo-baseline": {"name": "grpo"},
}


# ---------------------------------------------------------------------------------------- training


def run_variant(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    overrides = {**common.remix_settings(args), "name": "remix-grpo", **VARIANTS[variant]}
    algorithm = overrides.pop("name")
    cfg = common.toy_config_from_args(algorithm, args, seed=seed, steps=args.max_steps, **overrides)
    recorder = common.TrainingRecorder(rollout_budget=args.budget)
    trainer = Trainer(cfg, Path(args.workdir) / f"{variant}-seed{seed}", callbacks=recorder)
    result = trainer.train()
    if recorder.points[-1]["step"] != trainer.step:  # stopped on the budget: evaluate the final policy
        recorder.add_point(trainer.step, trainer.evaluate()["accuracy"])
    final = recorder.points[-1]
    print(
        f"{variant:>17} seed {seed}: {trainer.step} steps, {recorder.fresh_rollouts} fresh rollouts, "
        f"accuracy {recorder.points[0]['accuracy']:.3f} -> {final['accuracy']:.3f} "
        f"({recorder.train_s:.0f} s training)",
        flush=True,
    )
    return {
        "variant": variant,
        "seed": seed,
        "steps": trainer.step,
        "stopped_on_budget": result.stopped,
        "fresh_rollouts": recorder.fresh_rollouts,
        "train_s": recorder.train_s,
        "initial_accuracy": recorder.points[0]["accuracy"],
        "final_accuracy": final["accuracy"],
        "curve": recorder.points,
        "metrics": recorder.steps,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    return [run_variant(variant, seed, args) for variant in args.variants for seed in args.seeds]


# --------------------------------------------------------------------------------------- summaries


def _mean_of(steps: list[dict[str, Any]], key: str) -> float | None:
    values = [float(m[key]) for m in steps if key in m]
    return statistics.mean(values) if values else None


def signal_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Signals of the full variant, averaged over seeds and over the steps of each phase."""
    full = [r for r in runs if r["variant"] == "full"]
    by_phase: dict[str, dict[str, float | None]] = {}
    for phase in ("mix", "on-policy"):
        steps = [m for r in full for m in r["metrics"] if m["phase"] == phase]
        keys = [
            "response_length_fresh",
            "response_length_replay",
            "replay_ratio_first_half",
            "replay_ratio_second_half",
            *(f"replay_ratio_{q}" for q in QUARTILES),
            *(f"replay_abs_log_ratio_{q}" for q in QUARTILES),
            *(f"kw_{c}" for c in KEYWORD_CATEGORIES),
            *(f"kw_appear_{c}" for c in KEYWORD_CATEGORIES),
        ]
        by_phase[phase] = {key: _mean_of(steps, key) for key in keys} | {"steps": float(len(steps))}
    return by_phase


def ablation_rows(runs: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    rows = []
    for variant in variants:
        group = [r for r in runs if r["variant"] == variant]
        finals = [r["final_accuracy"] for r in group]
        rows.append(
            {
                "variant": variant,
                "seeds": len(group),
                "steps": statistics.mean(r["steps"] for r in group),
                "fresh_rollouts": statistics.mean(r["fresh_rollouts"] for r in group),
                "train_s": statistics.mean(r["train_s"] for r in group),
                "initial_accuracy": statistics.mean(r["initial_accuracy"] for r in group),
                "final_accuracy": statistics.mean(finals),
                "final_accuracy_per_seed": finals,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], signals: dict[str, Any], args: argparse.Namespace) -> str:
    ablation = common.markdown_table(
        [
            "variant",
            "seeds",
            "steps",
            "fresh rollouts",
            "training s",
            "initial acc",
            "final acc (mean)",
            "per seed",
        ],
        [
            [
                r["variant"],
                str(r["seeds"]),
                f"{r['steps']:.1f}",
                f"{r['fresh_rollouts']:,.0f}",
                f"{r['train_s']:.0f}",
                f"{r['initial_accuracy']:.3f}",
                f"{r['final_accuracy']:.3f}",
                ", ".join(f"{a:.3f}" for a in r["final_accuracy_per_seed"]),
            ]
            for r in rows
        ],
    )
    signal_rows = []
    for key in [
        "response_length_fresh",
        "response_length_replay",
        "replay_ratio_first_half",
        "replay_ratio_second_half",
        *(f"replay_ratio_{q}" for q in QUARTILES),
        *(f"replay_abs_log_ratio_{q}" for q in QUARTILES),
        "kw_self_reflection",
        "kw_appear_self_reflection",
        "kw_appear_hypotheticals",
        "kw_appear_uncertainty_markers",
    ]:
        signal_rows.append([f"`{key}`", *(common.fmt(signals[p][key], "{:.4f}", "n/a") for p in ("mix", "on-policy"))])
    signal_table = common.markdown_table(
        ["signal (full remix-grpo, mean over steps and seeds)", "mix phase", "on-policy phase"], signal_rows
    )
    setup = (
        f"Setup: {args.prompts} prompts x {args.group_size} responses per step, lr {args.lr}, "
        f"max {args.max_new_tokens} new tokens, p={args.p}, N={args.history}, UTD m={args.utd}, "
        f"reincarnation at step {args.reincarnation_step}, budget {args.budget:,} fresh rollouts per run, "
        f"held-out accuracy on {args.eval_size} prompts, seeds {args.seeds}."
    )
    return (
        f"{setup}\n\nAblation (final accuracy after the same fresh-rollout budget):\n\n{ablation}\n\n"
        f"Signals:\n\n{signal_table}\n"
    )


# ------------------------------------------------------------------------------------------- plots


def plot(runs: list[dict[str, Any]], rows: list[dict[str, Any]], figures: Path, name: str = NAME) -> list[Path]:
    plt = common.pyplot()
    full = [r for r in runs if r["variant"] == "full"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, r in enumerate(full):
        steps = [m["step"] for m in r["metrics"]]
        axes[0].plot(
            steps,
            [m["response_length_fresh"] for m in r["metrics"]],
            color="tab:blue",
            label="fresh" if i == 0 else None,
        )
        replay = [(m["step"], m["response_length_replay"]) for m in r["metrics"] if "response_length_replay" in m]
        if replay:
            axes[0].plot(
                *zip(*replay, strict=True),
                color="tab:red",
                linestyle="--",
                label="replayed" if i == 0 else None,
            )
    axes[0].set(xlabel="training step", ylabel="mean response length (tokens)", title="Response length")
    mix_steps = [m for r in full for m in r["metrics"] if m["phase"] == "mix"]
    quartile_means = [_mean_of(mix_steps, f"replay_abs_log_ratio_{q}") or 0.0 for q in QUARTILES]
    axes[1].bar(range(1, 5), quartile_means, color="tab:orange")
    axes[1].set(
        xlabel="quarter of the response (1 = first tokens)",
        ylabel="mean |log(pi_theta / pi_behaviour)|",
        title="Off-policy drift of replayed tokens by position",
        xticks=range(1, 5),
    )
    for r in runs:
        if r["seed"] == runs[0]["seed"]:
            axes[2].plot(
                [m["step"] for m in r["metrics"]],
                [m.get("kw_appear_self_reflection", 0.0) for m in r["metrics"]],
                label=r["variant"],
            )
    axes[2].set(xlabel="training step", ylabel="share of responses", title="Self-reflection keywords (fresh)")
    for ax in (axes[0], axes[2]):
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    signals_png = figures / f"{name}.png"
    fig.savefig(signals_png, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    palette = ("tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:blue")
    colors = dict(zip(VARIANTS, palette, strict=True))
    for r in runs:
        axes[0].plot(
            [p["fresh_rollouts"] for p in r["curve"]],
            [p["accuracy"] for p in r["curve"]],
            color=colors.get(r["variant"], "black"),
            alpha=0.8,
            label=r["variant"] if r["seed"] == runs[0]["seed"] else None,
        )
    axes[0].set(xlabel="fresh rollouts generated", ylabel="held-out greedy accuracy", title="Ablation curves")
    axes[0].legend()
    axes[1].bar(
        [r["variant"] for r in rows],
        [r["final_accuracy"] for r in rows],
        color=[colors.get(r["variant"], "black") for r in rows],
    )
    axes[1].set(ylabel="final held-out accuracy (mean over seeds)", title="Same fresh-rollout budget")
    axes[1].tick_params(axis="x", rotation=20)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    ablation_png = figures / f"{name}_ablation.png"
    fig.savefig(ablation_png, dpi=110)
    plt.close(fig)
    return [signals_png, ablation_png]


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=5120, help="fresh rollouts per run")
    parser.add_argument("--max-steps", type=int, default=200, help="upper bound; the budget normally stops first")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="the task's limit unless set")
    parser.add_argument("--p", type=float, default=0.4)
    parser.add_argument("--history", type=int, default=2)
    parser.add_argument("--utd", type=int, default=2)
    parser.add_argument("--reincarnation-step", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--eval-size", type=int, default=400)
    common.add_threads_argument(parser)
    common.add_task_argument(parser)
    parser.add_argument("--workdir", default=str(common.QUICK_DIR / NAME / "runs"))
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.seeds, args.budget, args.prompts, args.group_size = list(VARIANTS), [0], 40, 4, 4
        args.reincarnation_step, args.eval_every, args.eval_size, args.max_new_tokens = 2, 2, 16, 12
    common.apply_task_defaults(args)
    return args


KEPT_METRIC_PREFIXES = (
    "step",
    "phase",
    "accuracy",
    "reward_mean",
    "response_length",
    "replay_",
    "kw_",
    "fresh_rollouts_total",
    "eval_accuracy",
)


def _kept_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-step metrics this benchmark is about (keeps the JSON small)."""
    return {k: v for k, v in metrics.items() if k.startswith(KEPT_METRIC_PREFIXES)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    runs = run(args)
    rows = ablation_rows(runs, args.variants)
    signals = signal_summary(runs)
    name = common.report_name(NAME, args)
    data_dir, figures = common.output_paths(name, args.quick)
    data = {
        "args": vars(args),
        "ablation": rows,
        "signals": signals,
        "runs": [{**r, "metrics": [_kept_metrics(m) for m in r["metrics"]]} for r in runs],
    }
    pngs = plot(runs, rows, figures, name)
    text = markdown(rows, signals, args)
    common.publish(name, argv, report=not args.quick, data_dir=data_dir, data=data, text=text, images=pngs)
    return {"ablation": rows, "signals": signals}


if __name__ == "__main__":
    main()
