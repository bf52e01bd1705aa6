"""Seconds of one learner update (forward + backward + AdamW) on a batch of very different response
lengths, for several `algorithm.micro_batch_tokens` budgets, and of its no-grad log-prob pass.

The batch is synthetic (64 rows, prompts of 4-12 and responses of 1-50 tokens, uniformly drawn), the
models random: the builtin tiny model's shape and a ~10x larger Llama (benchmarks/engine_throughput.py),
one torch thread. Null is one forward over the whole minibatch, as before micro-batches existed.

    python -m benchmarks.micro_batch_update --budgets none 2048 1024 512 --repeats 3
    python -m benchmarks.micro_batch_update --quick    # seconds: tiny model, 16 rows, 1 repeat; under var/bench/

Writes the medians as JSON and a markdown table: under var/bench/micro_batch_update/ with --quick, else
to docs/benchmarks/micro_batch_update.{json,md} (docs/benchmarks.md quotes its numbers by hand).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.engine_throughput import build_small_llama
from benchmarks.learner_speed import random_model_dir
from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig
from remix_engine.distributed.context import DistContext
from remix_engine.learner import PolicyLearner
from remix_engine.modeling import load_policy
from remix_engine.policy_update import UpdatePlan, update_policy

NAME = "micro_batch_update"


def varied_batch(rows: int, seed: int = 0) -> RolloutBatch:
    gen = torch.Generator().manual_seed(seed)
    prompt_lengths = torch.randint(4, 13, (rows,), generator=gen)
    response_lengths = torch.randint(1, 51, (rows,), generator=gen)
    lp, lr = int(prompt_lengths.max()), int(response_lengths.max())
    columns_p, columns_r = torch.arange(lp).expand(rows, lp), torch.arange(lr).expand(rows, lr)
    prompt_mask = columns_p >= (lp - prompt_lengths)[:, None]
    response_mask = columns_r < response_lengths[:, None]
    response_ids = torch.randint(4, 100, (rows, lr), generator=gen) * response_mask
    logp = -torch.rand((rows, lr), generator=gen) * response_mask
    return RolloutBatch(
        prompt_ids=torch.randint(4, 100, (rows, lp), generator=gen) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        rollout_logp=logp,
        policy_version=torch.zeros(rows, dtype=torch.long),
        seeds=torch.arange(rows),
        group_ids=torch.arange(rows) // 8,
        prompt_index=torch.arange(rows) // 8,
        behavior_logp=logp,
        old_logp=logp,
        ref_logp=logp,
        advantages=torch.randn((rows, lr), generator=gen) * response_mask,
        is_replay=torch.zeros(rows, dtype=torch.bool),
    )


def seconds(model_dir: str, budget: int | None, batch: RolloutBatch, repeats: int) -> tuple[float, float]:
    """Median seconds of one update and of one no-grad log-prob pass over `batch`."""
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "algorithm": {"name": "grpo", "minibatch_size": len(batch), "micro_batch_tokens": budget},
        }
    )
    policy, _ = load_policy(cfg.model)
    learner = PolicyLearner(cfg, policy, DistContext(), torch.device("cpu"))
    updates, passes = [], []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        update_policy(
            learner,
            batch,
            UpdatePlan(epochs=1, lam=1.0),
            alg=cfg.algorithm,
            temperature=1.0,
            exclude_truncated=False,
            generator=torch.Generator().manual_seed(0),
        )
        updates.append(time.perf_counter() - start)
        start = time.perf_counter()
        learner.logprobs(learner.ref_model, batch)
        passes.append(time.perf_counter() - start)
    return statistics.median(updates[1:]), statistics.median(passes[1:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--budgets", nargs="+", default=["none", "2048", "1024", "512"])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.rows, args.repeats, args.models = ["none", "256", "64"], 16, 1, ["tiny"]
    torch.set_num_threads(1)
    batch = varied_batch(args.rows)
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {
            "tiny": lambda: random_model_dir(Path(tmp) / "tiny"),
            "small": lambda: str(build_small_llama(Path(tmp) / "small")),
        }
        for name in args.models:
            model_dir = dirs[name]()
            for budget in args.budgets:
                tokens = None if budget == "none" else int(budget)
                update_s, pass_s = seconds(model_dir, tokens, batch, args.repeats)
                results[f"{name}/{budget}"] = {"update_s": update_s, "logprob_pass_s": pass_s}
                rows.append(
                    {"model": name, "micro_batch_tokens": tokens, "update_s": update_s, "logprob_pass_s": pass_s}
                )
                print(
                    f"{name:>6} micro_batch_tokens={budget:>5}: update {update_s:.3f} s, log-prob pass {pass_s:.3f} s",
                    flush=True,
                )  # noqa: T201
    data_dir, _ = common.output_paths(NAME, args.quick)
    data = {"args": vars(args), "results": rows}
    common.publish(NAME, argv, report=False, data_dir=data_dir, data=data, text=markdown(rows), images=[])
    return results


def markdown(rows: list[dict[str, Any]]) -> str:
    """One row per (model, budget); "none" is one forward over the whole minibatch."""
    header = ["model", "micro_batch_tokens", "update s", "log-prob pass s"]
    table = [
        [
            row["model"],
            common.fmt(row["micro_batch_tokens"], "{}", missing="none"),
            f"{row['update_s']:.3f}",
            f"{row['logprob_pass_s']:.3f}",
        ]
        for row in rows
    ]
    return common.markdown_table(header, table) + "\n"


if __name__ == "__main__":
    main()
