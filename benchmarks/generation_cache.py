"""Seeded sampling on CPU with Hugging Face's dynamic KV cache against its static cache (and compiled).

Samples one batch with the rollout engine's own settings (rollout/hf.py: greedy decoding over the
SeededGumbelSampler's perturbed logits, per-row seeds, the checkpoint's generation defaults hidden) and
a fixed length (min_new_tokens = max_new_tokens, so every variant decodes the same number of steps),
then reports the median seconds of each cache variant and whether its tokens equal the dynamic cache's.

    python -m benchmarks.generation_cache --rows 64 --new-tokens 80 --repeats 3
    python -m benchmarks.generation_cache --quick    # seconds: 4 rows, 8 tokens, 1 repeat; under var/bench/

Writes the medians as JSON and a markdown table: under var/bench/generation_cache/ with --quick, else
to docs/benchmarks/generation_cache.{json,md} (docs/benchmarks.md quotes its numbers by hand).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks import common
from remix_engine.config import ModelConfig
from remix_engine.modeling import load_policy
from remix_engine.rollout.hf import SeededGumbelSampler, _model_generation_defaults_hidden

NAME = "generation_cache"


def sample(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, cache: dict[str, Any]) -> torch.Tensor:
    """(rows, Lp + new_tokens) sequences of one seeded sampling pass with the given cache options."""
    from transformers import GenerationConfig, LogitsProcessorList

    encoded = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    sampler = SeededGumbelSampler(
        list(range(len(prompts))), temperature=1.0, top_k=0, top_p=1.0, device=torch.device("cpu")
    )
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **cache,
    )
    with torch.inference_mode(), _model_generation_defaults_hidden(model):
        out: torch.Tensor = model.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--model", default="builtin:tiny-arith")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time the static cache under torch.compile")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.new_tokens, args.repeats = 4, 8, 1
    torch.set_num_threads(1)
    model, tokenizer = load_policy(ModelConfig(name_or_path=args.model))
    prompts = [f"What is {10 + i % 90}+{10 + (i * 7) % 90}? " for i in range(args.rows)]
    variants: dict[str, dict[str, Any]] = {"dynamic": {}, "static": {"cache_implementation": "static"}}
    if args.compile:
        from transformers import CompileConfig

        compile_config = CompileConfig()
        compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told
        variants["static+compile"] = {"cache_implementation": "static", "compile_config": compile_config}
    results: dict[str, Any] = {}
    reference = None
    for name, options in variants.items():
        sample(model, tokenizer, prompts, args.new_tokens, options)  # warm-up (and compilation)
        seconds, tokens = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            tokens = sample(model, tokenizer, prompts, args.new_tokens, options)
            seconds.append(time.perf_counter() - start)
        reference = tokens if reference is None else reference
        assert tokens is not None
        same = bool(torch.equal(tokens, reference))
        rate = args.rows * args.new_tokens / statistics.median(seconds)
        results[name] = {"median_s": statistics.median(seconds), "tokens_per_s": rate, "same_tokens_as_dynamic": same}
        print(f"{name:>15}: {statistics.median(seconds):.3f} s ({rate:,.0f} tok/s), same tokens: {same}", flush=True)  # noqa: T201
    data_dir, _ = common.output_paths(NAME, args.quick)
    data = {"args": vars(args), "results": results}
    common.publish(NAME, argv, report=False, data_dir=data_dir, data=data, text=markdown(results), images=[])
    return results


def markdown(results: dict[str, Any]) -> str:
    """One row per cache variant: median seconds of a sampling pass, tokens per second, same tokens."""
    header = ["cache", "median s", "tokens/s", "same tokens as dynamic"]
    rows = [
        [
            name,
            f"{row['median_s']:.3f}",
            f"{row['tokens_per_s']:,.0f}",
            "yes" if row["same_tokens_as_dynamic"] else "no",
        ]
        for name, row in results.items()
    ]
    return common.markdown_table(header, rows) + "\n"


if __name__ == "__main__":
    main()
