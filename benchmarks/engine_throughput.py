"""Engine throughput: generation and learner tokens/s, peak memory, and where a training step's time goes.

Two models: the task's builtin model (the tiny Llama, or the tiny reasoner with `--task reasoning`) and
a larger Llama (hidden 384, 6 layers, intermediate 1024) built locally with the same character tokenizer
and random weights (no download).
For each model and for grpo (on-policy) and remix-grpo (Mix phase: replay, UTD 2), one fresh process
runs a few warm-up steps and then times `Trainer.train_step()` phase by phase:

- generation: `engine.generate` (sampling with the KV cache);
- reward scoring: the rest of the rollout (reward functions, tensors to the device);
- behaviour log-probs: `_prepare_fresh` (learner log-probs of the fresh responses + advantages);
- reference log-probs: `_attach_reference_logprobs` (current, anchor and precedent policies, whole batch);
- learner: `_update` (forward + backward + AdamW, m passes over the batch in the Mix phase);
- replay bookkeeping: `buffer.sample` + `buffer.add`;
- other: the remainder of `step_s` (batch concatenation, policy snapshot for the precedent model, metrics).

Tokens are response tokens. Peak memory is the process's peak RSS (`resource.getrusage`; tracemalloc would
not see torch's allocator) or `torch.cuda.max_memory_allocated` on a GPU. A fresh process per configuration
keeps the peaks separate.

    python -m benchmarks.engine_throughput            # full run
    python -m benchmarks.engine_throughput --quick    # seconds; writes under var/bench/
    python -m benchmarks.engine_throughput --device cuda --backends hf vllm   # both rollout backends on a GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

NAME = "engine_throughput"
PHASES = (
    "generation",
    "reward scoring",
    "behaviour log-probs",
    "reference log-probs",
    "learner",
    "replay bookkeeping",
    "policy copies and weight sync",
    "other",
)
# The trainer's own per-step timings (`time_<part>_s` metrics) behind each phase.
TRAINER_PARTS = {
    "generation": "generation",
    "reward scoring": "scoring",
    "behaviour log-probs": "behaviour_logprobs",
    "reference log-probs": "reference_logprobs",
    "learner": "learner",
    "replay bookkeeping": "replay",
    "policy copies and weight sync": "policy_sync",
}
SMALL_LLAMA = {
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
}


# ------------------------------------------------------------------------------------------ models


def build_small_llama(target: Path, seed: int = 0) -> Path:
    """A randomly initialised Llama ~10x the tiny model, saved with the toy tokenizer as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from remix_engine.cache import build_once
    from remix_engine.toy import MAX_POSITIONS, VOCAB, build_char_tokenizer

    def write(tmp: Path) -> None:
        tokenizer = build_char_tokenizer()
        config = LlamaConfig(
            vocab_size=len(VOCAB),
            max_position_embeddings=MAX_POSITIONS,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **SMALL_LLAMA,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "small_llama_meta.json").write_text(json.dumps({"num_parameters": model.num_parameters()}))

    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, write, marker="small_llama_meta.json")


def model_sources(args: argparse.Namespace) -> dict[str, str]:
    sources = {f"{common.task_of(args).model} (pretrained)": str(common.build_task_model(args))}
    if not args.quick:
        sources["small (hidden 384, 6 layers)"] = str(build_small_llama(common.QUICK_DIR / NAME / "small-llama"))
    return sources


# ------------------------------------------------------------------------------------ phase timing


def step_breakdown(metrics: dict[str, Any]) -> dict[str, float]:
    """Seconds of one step per phase, from the trainer's `time_<part>_s` metrics; the rest is 'other'."""
    phases = {phase: float(metrics.get(f"time_{part}_s", 0.0)) for phase, part in TRAINER_PARTS.items()}
    phases["other"] = max(float(metrics["step_s"]) - sum(phases.values()), 0.0)
    return {phase: phases[phase] for phase in PHASES}


# -------------------------------------------------------------------------------- one configuration


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(model: str, algorithm: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up then measured steps of one (model, algorithm, rollout backend) in this process."""
    from remix_engine.trainer import Trainer

    torch.set_num_threads(args.threads)
    cfg = common.step_timing_config(
        algorithm,
        model=model,
        steps=args.warmup + args.steps,
        prompts=args.prompts,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        train_path=common.task_of(args).dataset,
        micro_batch_tokens=args.micro_batch_tokens or None,
    )
    cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"backend": backend})})
    trainer = Trainer(cfg, Path(args.workdir) / "unused", device=args.device)
    rss_after_load = current_rss_mib()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for index in range(args.warmup + args.steps):
        metrics = trainer.train_step()
        breakdown = step_breakdown(metrics)
        if index < args.warmup:
            continue
        epochs = args.utd if metrics["phase"] == "mix" else 1
        fresh_tokens = float(metrics["response_length_fresh"]) * int(metrics["fresh_samples"])
        replay_tokens = float(metrics.get("response_length_replay", 0.0)) * int(metrics["replayed_samples"])
        steps.append(
            {
                "step_s": float(metrics["step_s"]),
                "breakdown": breakdown,
                "fresh_tokens": fresh_tokens,
                "learner_tokens": epochs * (fresh_tokens + replay_tokens),
            }
        )
    total = {phase: sum(s["breakdown"][phase] for s in steps) for phase in PHASES}
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    return {
        "model": model,
        "algorithm": algorithm,
        "backend": backend,
        "device": args.device,
        "threads": args.threads,
        "num_parameters": sum(p.numel() for p in trainer.policy.parameters()),
        "step_s": sum(s["step_s"] for s in steps) / len(steps),
        "generation_tokens_per_s": sum(s["fresh_tokens"] for s in steps) / total["generation"],
        "learner_tokens_per_s": sum(s["learner_tokens"] for s in steps) / total["learner"],
        "breakdown_s": {phase: value / len(steps) for phase, value in total.items()},
        "rss_after_load_mib": rss_after_load,
        "peak_rss_mib": common.peak_rss_mib(),
        "gpu_peak_mib": gpu_peak,
        "steps": steps,
    }


def measure_in_subprocess(
    model: str, algorithm: str, backend: str, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        f"benchmarks.{NAME}",
        "--single",
        model,
        algorithm,
        backend,
        "--single-out",
        str(out),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--prompts",
        str(args.prompts),
        "--group-size",
        str(args.group_size),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--threads",
        str(args.threads),
        "--task",
        args.task,
        "--micro-batch-tokens",
        str(args.micro_batch_tokens),
        "--device",
        args.device,
        "--workdir",
        args.workdir,
    ]
    subprocess.run(command, check=True, cwd=common.REPO_ROOT)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------- reporting


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    memory_header = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB (after load)"
    table = common.markdown_table(
        [
            "model",
            "params",
            "algorithm",
            "rollout backend",
            "s/step",
            "generation tok/s",
            "learner tok/s",
            memory_header,
        ],
        [
            [
                r["label"],
                f"{r['num_parameters'] / 1e6:.2f}M",
                r["algorithm"],
                r["backend"],
                f"{r['step_s']:.2f}",
                f"{r['generation_tokens_per_s']:,.0f}",
                f"{r['learner_tokens_per_s']:,.0f}",
                f"{r['gpu_peak_mib']:.0f}"
                if r["gpu_peak_mib"] is not None
                else f"{r['peak_rss_mib']:.0f} ({r['rss_after_load_mib']:.0f})",
            ]
            for r in results
        ],
    )
    shares = common.markdown_table(
        ["model", "algorithm", "rollout backend", *PHASES],
        [
            [
                r["label"],
                r["algorithm"],
                r["backend"],
                *(f"{100 * r['breakdown_s'][p] / r['step_s']:.0f}%" for p in PHASES),
            ]
            for r in results
        ],
    )
    setup = (
        f"Setup: {args.prompts} prompts x {args.group_size} responses per step, max {args.max_new_tokens} "
        f"new tokens, {args.warmup} warm-up + {args.steps} measured steps per row, device {args.device}, "
        f"{args.threads} torch thread(s); remix-grpo rows are Mix-phase steps (40% replayed, UTD 2). "
        "Tokens are response tokens; learner tokens count every pass over the batch. The small model has "
        "random weights, so its responses always run to the maximum length (the pretrained one stops at its "
        f"EOS). Learner micro-batches: {args.micro_batch_tokens or 'none (one forward per minibatch)'} tokens."
    )
    return f"{setup}\n\n{table}\n\nShare of the step time:\n\n{shares}\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    labels = [f"{r['label'].split(' ')[0]}\n{r['algorithm']}\n{r['backend']}" for r in results]
    bottom = [0.0] * len(results)
    for phase in PHASES:
        values = [r["breakdown_s"][phase] for r in results]
        ax.bar(labels, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(ylabel="seconds per training step", title="Where a training step's time goes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "remix-grpo"])
    parser.add_argument(
        "--backends", nargs="+", choices=["hf", "vllm"], default=["hf"], help="rollout backends ('vllm' needs CUDA)"
    )
    parser.add_argument("--steps", type=int, default=5, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (remix-grpo needs 2 to replay)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--utd", type=int, default=2, help="the config's default UTD ratio (for token counts)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="the task's limit unless set")
    common.add_threads_argument(parser)
    common.add_task_argument(parser)
    parser.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=None,
        help="algorithm.micro_batch_tokens (0: one forward per minibatch); the task's setting unless given",
    )
    parser.add_argument("--no-docs", action="store_true", help="write under var/bench/ and leave docs/ alone")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", default=str(common.QUICK_DIR / NAME / "runs"))
    parser.add_argument("--single", nargs=3, metavar=("MODEL", "ALGORITHM", "BACKEND"), help=argparse.SUPPRESS)
    parser.add_argument("--single-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.prompts, args.group_size, args.max_new_tokens = 1, 2, 4, 4, 12
    common.apply_task_defaults(args)
    if args.micro_batch_tokens is None:
        args.micro_batch_tokens = common.task_of(args).micro_batch_tokens or 0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.single:  # child process: one configuration
        common.write_json(Path(args.single_out), measure(*args.single, args))
        return {}
    name = common.report_name(NAME, args)
    data_dir, figures = common.output_paths(name, args.quick or args.no_docs)
    results = []
    for label, source in model_sources(args).items():
        for algorithm in args.algorithms:
            for backend in args.backends:
                result = measure_in_subprocess(source, algorithm, backend, args, data_dir / f"{NAME}-single.json")
                results.append({"label": label, **result})
                print(
                    f"{label:>28} {algorithm:>10} {backend:>4}: {result['step_s']:.2f} s/step, generation "
                    f"{result['generation_tokens_per_s']:,.0f} tok/s, "
                    f"learner {result['learner_tokens_per_s']:,.0f} tok/s, "
                    f"peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    (data_dir / f"{NAME}-single.json").unlink(missing_ok=True)
    png = figures / f"{name}.png"
    plot(results, png)
    data = {"args": vars(args), "results": results}
    text = markdown(results, args)
    report = not (args.quick or args.no_docs)
    common.publish(name, argv, report=report, data_dir=data_dir, data=data, text=text, images=[png])
    return {"results": results}


if __name__ == "__main__":
    main()
