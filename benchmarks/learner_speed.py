"""Per-part step times of a short training run on the toy task: the learner side's before/after numbers.

Runs a Trainer for a few steps per (algorithm, repeat), each in this process with one torch thread, and
prints the median over repeats of each part's seconds per measured step (the trainer's `time_<part>_s`
metrics and `step_s`). `--model random` trains an untrained tiny Llama (seed 1), whose responses end at
a random EOS and so vary widely in length, which is what padding-aware batching is about; the builtin
model's answers are all about the same length.

    python -m benchmarks.learner_speed --algorithms grpo remix-grpo --repeats 3
    python -m benchmarks.learner_speed --micro-batch-tokens 256   # with length-bucketed micro-batches
    python -m benchmarks.learner_speed --minibatch-size 16        # several minibatches per pass
    python -m benchmarks.learner_speed --quick    # seconds: 1 repeat, 1 measured step; writes under var/bench/

Writes the medians as JSON and a markdown table: under var/bench/learner_speed/ with --quick, else to
docs/benchmarks/learner_speed.{json,md} (docs/benchmarks.md quotes its numbers by hand).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

NAME = "learner_speed"
PARTS = ("generation", "behaviour_logprobs", "reference_logprobs", "learner")


def random_model_dir(root: Path) -> str:
    """An untrained tiny Llama with the character tokenizer, as a local model folder."""
    from remix_engine.toy import build_char_tokenizer, build_untrained_model

    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


def run_once(model: str, algorithm: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Mean seconds per measured step of each part, over `args.steps` steps after `args.warmup`."""
    from remix_engine.trainer import Trainer

    overrides: dict[str, Any] = {}
    if args.micro_batch_tokens is not None:
        overrides["micro_batch_tokens"] = args.micro_batch_tokens
    if args.minibatch_size is not None:
        overrides["minibatch_size"] = args.minibatch_size
    cfg = common.step_timing_config(
        algorithm,
        model=model,
        steps=args.warmup + args.steps,
        prompts=args.prompts,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        **overrides,
    )
    trainer = Trainer(cfg, workdir)
    sums = dict.fromkeys((*PARTS, "step"), 0.0)
    lengths = []
    for index in range(args.warmup + args.steps):
        metrics = trainer.train_step()
        if index < args.warmup:
            continue
        lengths.append(float(metrics["response_length_fresh"]))
        for part in PARTS:
            sums[part] += float(metrics.get(f"time_{part}_s", 0.0))
        sums["step"] += float(metrics["step_s"])
    result = {part: value / args.steps for part, value in sums.items()}
    result["response_length_fresh"] = sum(lengths) / len(lengths)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--model", default="builtin:tiny-arith", help="a model id, or 'random' (see above)")
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "remix-grpo"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (remix-grpo needs 2 to replay)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int, default=None)
    parser.add_argument("--minibatch-size", type=int, default=None, help="default: the whole batch")
    parser.add_argument("--out", type=Path, help="also write the medians here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup, args.prompts, args.group_size, args.max_new_tokens = 1, 1, 2, 4, 4, 12
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model_dir(Path(tmp) / "model") if args.model == "random" else args.model
        for algorithm in args.algorithms:
            runs = [run_once(model, algorithm, args, Path(tmp) / f"{algorithm}-{i}") for i in range(args.repeats)]
            results[algorithm] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            row = "  ".join(f"{key} {value:.3f}" for key, value in results[algorithm].items())
            print(f"{algorithm:>10}: {row}", flush=True)  # noqa: T201
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "medians": results}, indent=1))
    data_dir, _ = common.output_paths(NAME, args.quick)
    data = {"args": vars(args) | {"out": str(args.out) if args.out else None}, "medians": results}
    common.publish(NAME, argv, report=False, data_dir=data_dir, data=data, text=markdown(results), images=[])
    return results


def markdown(results: dict[str, Any]) -> str:
    """Median seconds per measured step of each part, one row per algorithm."""
    keys = [*PARTS, "step"]
    header = ["algorithm", *(f"{key} s" for key in keys), "fresh response length"]
    rows = [
        [algorithm, *(f"{medians[key]:.3f}" for key in keys), f"{medians['response_length_fresh']:.1f}"]
        for algorithm, medians in results.items()
    ]
    return common.markdown_table(header, rows) + "\n"


if __name__ == "__main__":
    main()
