"""Our grpo and remix-grpo against Hugging Face TRL's GRPOTrainer on a builtin task (`--task`).

All three train the same pretrained model directory (the task's builtin model) on the
same training prompts, with the same reward (our `math_verify`, wrapped as a TRL reward function), group
size, prompts per step, learning rate (constant AdamW, grad clip 1.0), sampling temperature, maximum
completion length, clip epsilon, k3 KL coefficient, entropy bonus and token-mean loss ("dapo" in TRL,
which equals token-mean with one process and no gradient accumulation); one optimizer step per batch.
TRL runs on the CPU without vLLM. Held-out greedy accuracy is measured with our `evaluate_greedy` on the
same split for all three (for TRL through an `HFRolloutEngine` wrapping the model TRL trains).

Measured: seconds per training step (median, generation + scoring + update), and the fresh rollouts and
training seconds until held-out accuracy first reaches the target. Training seconds exclude held-out
evaluation and checkpoint writing for every system.

    python -m benchmarks.trl_comparison            # full run (needs the `bench` extra: trl)
    python -m benchmarks.trl_comparison --quick    # seconds; writes under var/bench/
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from remix_engine.config import PRESETS, RewardSpec, RolloutConfig, TrainConfig
from remix_engine.evaluation import evaluate_greedy
from remix_engine.rewards import REWARDS
from remix_engine.rollout import HFRolloutEngine
from remix_engine.splits import load_train_eval
from remix_engine.trainer import Trainer

NAME = "trl_comparison"
SYSTEMS = ("trl-grpo", "grpo", "remix-grpo")
COLORS = {"trl-grpo": "tab:green", "grpo": "tab:blue", "remix-grpo": "tab:red"}


def math_verify_reward(completions: list[str], answer: list[str], **_: Any) -> list[float | None]:
    """Our math_verify reward in TRL's reward-function signature (dataset columns come as kwargs)."""
    return REWARDS.get("math_verify")(completions, answer)


# --------------------------------------------------------------------------------------- our engine


def our_config(system: str, seed: int, args: argparse.Namespace) -> TrainConfig:
    return common.toy_config_from_args(
        system,
        args,
        seed=seed,
        steps=args.steps,
        model=str(args.model_dir),
        kl_coef=args.kl_coef,
        entropy_coef=args.entropy_coef,
        clip_eps=args.clip_eps,
        **(common.remix_settings(args) if PRESETS[system].replay else {}),
    )


def run_ours(system: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    recorder = common.TrainingRecorder()
    Trainer(our_config(system, seed, args), Path(args.workdir) / f"{system}-seed{seed}", callbacks=recorder).train()
    return {
        "step_s": [float(m["step_s"]) for m in recorder.steps],
        "curve": recorder.points,
        "train_s": recorder.train_s,
    }


# ---------------------------------------------------------------------------------------------- TRL


class TrlRecorder:
    """A transformers TrainerCallback timing each optimizer step and evaluating between steps."""

    def __init__(self, evaluate: Any, eval_every: int, rollouts_per_step: int) -> None:
        self.evaluate, self.eval_every, self.rollouts_per_step = evaluate, eval_every, rollouts_per_step
        self.started = time.perf_counter()
        self.step_s: list[float] = []
        self.points: list[dict[str, float]] = []
        self._step_started = 0.0

    def _point(self, step: int, model: Any) -> None:
        self.points.append(
            {
                "step": step,
                "fresh_rollouts": float(step * self.rollouts_per_step),
                "train_s": sum(self.step_s),
                "wall_s": time.perf_counter() - self.started,
                "accuracy": self.evaluate(model),
            }
        )

    def on_train_begin(self, _args: Any, _state: Any, _control: Any, model: Any = None, **_: Any) -> None:
        self._point(0, model)

    def on_step_begin(self, _args: Any, _state: Any, _control: Any, **_: Any) -> None:
        self._step_started = time.perf_counter()

    def on_step_end(self, _args: Any, state: Any, _control: Any, model: Any = None, **_: Any) -> None:
        self.step_s.append(time.perf_counter() - self._step_started)
        if state.global_step % self.eval_every == 0 or state.global_step == state.max_steps:
            self._point(state.global_step, model)


def _as_callback(recorder: TrlRecorder) -> Any:
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        on_train_begin = staticmethod(recorder.on_train_begin)
        on_step_begin = staticmethod(recorder.on_step_begin)
        on_step_end = staticmethod(recorder.on_step_end)

    return _Callback()


def run_trl(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    cfg = our_config("grpo", seed, args)  # same prompts, split and eval set as ours
    train, held_out = load_train_eval(cfg)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    spec = RewardSpec(name="math_verify")
    eval_prompts, eval_answers = [ex.prompt for ex in held_out], [ex.answer for ex in held_out]
    rollout_cfg = RolloutConfig(max_new_tokens=args.max_new_tokens)

    def evaluate(model: Any) -> float:
        engine = HFRolloutEngine(model, tokenizer, rollout_cfg)
        return evaluate_greedy(engine, eval_prompts, eval_answers, spec, args.max_new_tokens)["accuracy"]

    config = GRPOConfig(
        output_dir=str(Path(args.workdir) / f"trl-seed{seed}"),
        seed=seed,
        use_cpu=True,
        bf16=False,
        fp16=False,
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts * args.group_size,
        num_generations=args.group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.kl_coef,
        epsilon=args.clip_eps,
        entropy_coef=args.entropy_coef,
        loss_type="dapo",
        scale_rewards="group",
        use_vllm=False,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    recorder = TrlRecorder(evaluate, args.eval_every, args.prompts * args.group_size)
    trainer = GRPOTrainer(
        model=str(args.model_dir),
        reward_funcs=[math_verify_reward],
        args=config,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": ex.prompt, "answer": ex.answer} for ex in train]),
        callbacks=[_as_callback(recorder)],
    )
    trainer.train()
    return {"step_s": recorder.step_s, "curve": recorder.points, "train_s": sum(recorder.step_s)}


# ------------------------------------------------------------------------------------------ summary


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        for system in args.systems:
            result = run_trl(seed, args) if system == "trl-grpo" else run_ours(system, seed, args)
            hit = common.first_reaching(result["curve"], args.target)
            runs.setdefault(system, []).append({"seed": seed, "reached": hit, **result})
            step_s = common.median(result["step_s"][1:] or result["step_s"])
            print(
                f"{system:>10} seed {seed}: median {step_s:.2f} s/step, accuracy "
                f"{result['curve'][0]['accuracy']:.3f} -> {result['curve'][-1]['accuracy']:.3f}, "
                f"target reached: {hit}",
                flush=True,
            )
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for system, group in runs.items():
        hits = [r["reached"] for r in group if r["reached"]]
        # The first step pays one-off costs (allocator warm-up, lazy imports); the median skips it.
        step_times = [t for r in group for t in (r["step_s"][1:] or r["step_s"])]
        rows.append(
            {
                "system": system,
                "seeds_reaching_target": f"{len(hits)}/{len(group)}",
                "median_step_s": common.median(step_times),
                "mean_step_s": statistics.mean(step_times),
                "fresh_rollouts_to_target": statistics.mean(h["fresh_rollouts"] for h in hits) if hits else None,
                "steps_to_target": statistics.mean(h["step"] for h in hits) if hits else None,
                "train_s_to_target": statistics.mean(h["train_s"] for h in hits) if hits else None,
                "initial_accuracy": statistics.mean(r["curve"][0]["accuracy"] for r in group),
                "final_accuracy": statistics.mean(r["curve"][-1]["accuracy"] for r in group),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    table = common.markdown_table(
        [
            "system",
            f"seeds reaching {args.target:.0%}",
            "median s/step",
            "fresh rollouts to target",
            "steps to target",
            "training s to target",
            "initial acc",
            "final acc",
        ],
        [
            [
                r["system"],
                r["seeds_reaching_target"],
                f"{r['median_step_s']:.2f}",
                common.fmt(r["fresh_rollouts_to_target"], "{:,.0f}"),
                common.fmt(r["steps_to_target"], "{:.1f}"),
                common.fmt(r["train_s_to_target"], "{:.1f}"),
                f"{r['initial_accuracy']:.3f}",
                f"{r['final_accuracy']:.3f}",
            ]
            for r in rows
        ],
    )
    by_system = {r["system"]: r for r in rows}
    lines = []
    if {"trl-grpo", "grpo"} <= by_system.keys():
        ratio = by_system["grpo"]["median_step_s"] / by_system["trl-grpo"]["median_step_s"]
        lines.append(
            f"- Per step, our on-policy grpo takes {ratio:.2f}x the time of TRL's GRPOTrainer "
            f"({'faster' if ratio < 1 else 'slower'})."
        )
    if {"trl-grpo", "remix-grpo"} <= by_system.keys():
        ours, theirs = (
            by_system["remix-grpo"]["train_s_to_target"],
            by_system["trl-grpo"]["train_s_to_target"],
        )
        if ours is not None and theirs is not None:
            lines.append(f"- remix-grpo reaches {args.target:.0%} in {ours / theirs:.2f}x TRL's training time.")
        else:
            lines.append(
                f"- Target {args.target:.0%} reached by remix-grpo: {ours is not None}, "
                f"by TRL: {theirs is not None} (no time ratio)."
            )
    setup = (
        f"Setup: {args.prompts} prompts x {args.group_size} responses per step, {args.steps} steps, "
        f"lr {args.lr} (constant), max {args.max_new_tokens} new tokens, temperature 1, "
        f"clip {args.clip_eps}, "
        f"KL (k3) {args.kl_coef}, entropy {args.entropy_coef}; remix-grpo p={args.p}, N={args.history}, "
        f"m={args.utd}, reincarnation at step {args.reincarnation_step}; held-out greedy accuracy on "
        f"{args.eval_size} prompts every {args.eval_every} steps; seeds {args.seeds}; {args.threads} torch "
        f"thread(s)."
    )
    return f"{setup}\n\n{table}\n\n" + "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]], path: Path, target: float) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for system, group in runs.items():
        for i, r in enumerate(group):
            label = system if i == 0 else None
            ys = [p["accuracy"] for p in r["curve"]]
            axes[0].plot([p["train_s"] for p in r["curve"]], ys, color=COLORS[system], label=label)
            axes[1].plot([p["fresh_rollouts"] for p in r["curve"]], ys, color=COLORS[system], label=label)
    for ax, xlabel in zip(axes[:2], ("training seconds (evaluation excluded)", "fresh rollouts"), strict=True):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel=xlabel, ylabel="held-out greedy accuracy")
        ax.legend()
    axes[2].bar(
        [r["system"] for r in rows],
        [r["median_step_s"] for r in rows],
        color=[COLORS[r["system"]] for r in rows],
    )
    axes[2].set(ylabel="median seconds per training step", title="Step time")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="the task's limit unless set")
    parser.add_argument("--clip-eps", type=float, default=0.2)
    parser.add_argument("--kl-coef", type=float, default=0.001)
    parser.add_argument("--entropy-coef", type=float, default=0.001)
    parser.add_argument("--p", type=float, default=0.4)
    parser.add_argument("--history", type=int, default=2)
    parser.add_argument("--utd", type=int, default=2)
    parser.add_argument("--reincarnation-step", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--eval-size", type=int, default=400)
    common.add_threads_argument(parser)
    common.add_task_argument(parser)
    parser.add_argument("--workdir", default=str(common.QUICK_DIR / NAME / "runs"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.prompts, args.group_size, args.eval_every = [0], 2, 4, 4, 1
        args.eval_size, args.max_new_tokens, args.reincarnation_step = 16, 12, 1
    common.apply_task_defaults(args)
    args.model_dir = common.build_task_model(args)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    runs = run(args)
    rows = summarise(runs)
    name = common.report_name(NAME, args)
    data_dir, figures = common.output_paths(name, args.quick)
    png = figures / f"{name}.png"
    plot(runs, rows, png, args.target)
    data = {"args": vars(args), "summary": rows, "runs": runs}
    text = markdown(rows, args)
    common.publish(name, argv, report=not args.quick, data_dir=data_dir, data=data, text=text, images=[png])
    return {"summary": rows}


if __name__ == "__main__":
    main()
