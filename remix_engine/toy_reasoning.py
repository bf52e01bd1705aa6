r"""A small *reasoning* model and task that need no download: 3-digit addition worked column by column.

`builtin:column-addition` asks "347+586=". A worked answer adds the columns from the right, one line each,
carrying as it goes, sometimes re-checks the last column, and ends with the boxed sum:

    7+6=13 carry 1
    4+8+1=13 carry 1
    3+5+1=9
    check: 3+5+1=9 ok
    \boxed{933}

That is 30-80 characters (one token each, ~55 on average) of working and answer. A terse answer, just
``\boxed{933}``, is also in the model's repertoire but is far less often right, so a policy can shorten or
lengthen its responses and pays for it in accuracy; the "check:" lines give the self-reflection keyword
rates (remix_engine/behavior.py) something to count.

`build_tiny_reasoner()` builds `builtin:tiny-reasoner`: the character tokenizer of remix_engine/toy.py and a
~0.17M-parameter Llama, supervised-pretrained on a mix of worked (75%) and terse (25%) answers until its
greedy held-out accuracy first reaches `SFT_TARGET_ACCURACY`, so reinforcement finetuning has room to raise
it; about a minute on 2 CPU cores, cached on disk like the addition model. The train/eval split is a hash
of the operand pair (toy.split_of), never the seed.

Deliberately omitted: operands of other lengths (fixed 3-digit columns keep the task learnable by a model
this small in a minute), and any chat template (the prompt is plain text, as for `builtin:tiny-arith`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from remix_engine.cache import build_once, default_cache_dir, read_build_meta
from remix_engine.rewards.answers import extract_boxed
from remix_engine.toy import (
    Split,
    build_untrained_model,
    format_prompt,
    padded_sft_batch,
    sft_step,
    split_of,
    write_pretrained_char_model,
)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from remix_engine.data import Example

REASONER_VERSION = "v1"
META_FILENAME = "tiny_reasoner_meta.json"
MAX_POSITIONS = 128  # prompt (<= 9 tokens) + the longest worked answer (~60) with room for longer ones
MAX_COMPLETION_TOKENS = 96  # what the accuracy checks let the model write
OPERAND_RANGE = range(100, 1000)  # both operands have exactly three digits
MODEL_SIZES = {"hidden_size": 64, "intermediate_size": 128, "max_positions": MAX_POSITIONS}

# Supervised mix: this share of answers is terse, and this share of worked answers re-checks a column.
TERSE_SHARE = 0.25
CHECK_SHARE = 0.5

# Accuracy stays near 0 for ~300 steps, then climbs past 0.5 within ~100 steps, so checks get denser once
# it moves, and the build stops at the first check at or above the target.
SFT_BATCH_SIZE = 64
SFT_LR = 3e-3
SFT_WARMUP_STEPS = 50
SFT_MAX_STEPS = 1500
SFT_CHECK_EVERY_SLOW = 50
SFT_CHECK_EVERY_FAST = 10
SFT_FAST_CHECKS_FROM_ACCURACY = 0.02
SFT_CHECK_SIZE = 128
SFT_TARGET_ACCURACY = 0.25
FINAL_EVAL_SIZE = 500


# --------------------------------------------------------------------------------------------- task


def worked_completion(a: int, b: int, *, check: bool) -> str:
    """The column-by-column working for a+b, optionally re-checking the last column, then the boxed sum."""
    lines, carry = [], 0
    for x, y in zip(str(a)[::-1], str(b)[::-1], strict=True):
        total = int(x) + int(y) + carry
        lines.append(f"{x}+{y}{'+1' if carry else ''}={total}" + (" carry 1" if total >= 10 else ""))
        carry = total // 10
    if check:
        lines.append(f"check: {lines[-1].split(' ')[0]} ok")
    return "\n".join(lines) + f"\n\\boxed{{{a + b}}}"


def terse_completion(a: int, b: int) -> str:
    return f"\\boxed{{{a + b}}}"


def sample_pairs(split: Split, n: int, seed: int) -> list[tuple[int, int]]:
    """n operand pairs of the split, drawn uniformly with a seeded generator (the split has ~729k pairs)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"column-addition:{split}:{seed}")
    out: list[tuple[int, int]] = []
    while len(out) < n:
        a, b = rng.choice(OPERAND_RANGE), rng.choice(OPERAND_RANGE)
        if split_of(a, b) == split:
            out.append((a, b))
    return out


def reasoning_examples(split: Split, n: int, seed: int) -> list[Example]:
    """n problems ("347+586=", answer "933") from the train or the held-out eval split."""
    from remix_engine.data import Example  # remix_engine.data imports nothing from here; kept lazy to stay light

    return [Example(prompt=format_prompt(a, b), answer=str(a + b)) for a, b in sample_pairs(split, n, seed)]


# -------------------------------------------------------------------------------------------- model


def build_untrained_reasoner(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    return build_untrained_model(tokenizer, seed, **MODEL_SIZES)


def _encode_batch(
    tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[int, int]], rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded <bos>prompt+completion<eos> ids (N, L) and a mask (N, L) of completion tokens; each pair
    gets a worked or terse completion (and a check line or not) drawn from `rng`."""
    rows = []
    for a, b in pairs:
        if rng.random() < TERSE_SHARE:
            text = terse_completion(a, b)
        else:
            text = worked_completion(a, b, check=rng.random() < CHECK_SHARE)
        prompt = tokenizer(format_prompt(a, b))["input_ids"]
        completion = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt, completion))
    return padded_sft_batch(rows, tokenizer.pad_token_id)


@torch.no_grad()
def answer_stats(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[int, int]], *, sample: bool = False
) -> dict[str, float]:
    """Accuracy (last boxed answer equals a+b), mean response length in tokens and the share of terse
    responses, greedy or sampled at temperature 1 (seeded by the caller's torch RNG)."""
    was_training = model.training
    model.eval()
    prompts = tokenizer([format_prompt(a, b) for a, b in pairs], padding=True, return_tensors="pt")
    out = cast(Any, model).generate(  # transformers' stubs type generate's self too narrowly
        **prompts,
        max_new_tokens=MAX_COMPLETION_TOKENS,
        do_sample=sample,
        temperature=1.0 if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.train(was_training)
    texts = tokenizer.batch_decode(out[:, prompts["input_ids"].shape[1] :], skip_special_tokens=True)
    correct = sum(extract_boxed(text) == str(a + b) for text, (a, b) in zip(texts, pairs, strict=True))
    return {
        "accuracy": correct / len(pairs),
        "mean_length": sum(len(text) for text in texts) / len(texts),
        "terse_share": sum(text.strip().startswith("\\boxed") for text in texts) / len(texts),
    }


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int) -> dict[str, float | int]:
    """Supervised training on the train split, stopping once held-out greedy accuracy reaches the target."""
    rng = random.Random(f"column-addition-sft:{seed}")
    check_pairs = sample_pairs("eval", SFT_CHECK_SIZE, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    model.train()
    accuracy, last_check, step, loss = 0.0, 0, 0, float("nan")
    for step in range(1, SFT_MAX_STEPS + 1):
        pairs = sample_pairs("train", SFT_BATCH_SIZE, seed * 1_000_003 + step)
        ids, loss_mask = _encode_batch(tokenizer, pairs, rng)
        loss = sft_step(model, optimizer, ids, loss_mask, lr=SFT_LR * min(1.0, step / SFT_WARMUP_STEPS))
        check_every = SFT_CHECK_EVERY_FAST if accuracy >= SFT_FAST_CHECKS_FROM_ACCURACY else SFT_CHECK_EVERY_SLOW
        if step - last_check >= check_every:
            accuracy, last_check = answer_stats(model, tokenizer, check_pairs)["accuracy"], step
            if accuracy >= SFT_TARGET_ACCURACY:
                break
    model.eval()
    eval_pairs = sample_pairs("eval", FINAL_EVAL_SIZE, seed + 1)
    greedy = answer_stats(model, tokenizer, eval_pairs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampled = answer_stats(model, tokenizer, eval_pairs, sample=True)
    return {
        "sft_steps": step,
        "final_sft_loss": loss,
        "eval_size": len(eval_pairs),
        "eval_accuracy": greedy["accuracy"],
        "eval_mean_length": greedy["mean_length"],
        "sampled_accuracy": sampled["accuracy"],
        "sampled_mean_length": sampled["mean_length"],
        "sampled_terse_share": sampled["terse_share"],
    }


# -------------------------------------------------------------------------------------------- cache


def tiny_reasoner_dir(cache_dir: Path | None = None, seed: int = 0) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"tiny-reasoner-{REASONER_VERSION}-seed{seed}"


def _write_tiny_reasoner(out_dir: Path, seed: int) -> None:
    write_pretrained_char_model(
        out_dir,
        seed,
        max_positions=MAX_POSITIONS,
        build_model=build_untrained_reasoner,
        pretrain=pretrain,
        meta_filename=META_FILENAME,
        meta={
            "version": REASONER_VERSION,
            "task": "3-digit addition worked column by column: prompt 'a+b=', working lines, then '\\boxed{a+b}'",
        },
    )


def build_tiny_reasoner(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Path of the pretrained tiny reasoning model directory, building it on first use (~1 minute on CPU)."""
    target = tiny_reasoner_dir(cache_dir, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, lambda tmp: _write_tiny_reasoner(tmp, seed), marker=META_FILENAME)


def read_tiny_reasoner_meta(model_dir: Path) -> dict[str, Any]:
    return read_build_meta(model_dir, META_FILENAME)
