"""A small base model and task that need no download: 2-digit addition with a tiny Llama.

`build_tiny_model()` builds, from a seed, a character-level Hugging Face tokenizer and a ~0.7M-parameter
Llama-style model, supervised-pretrains it on "12+34=" -> "\\boxed{46}<eos>" just long enough to reach a
moderate greedy accuracy on a held-out split (so reinforcement finetuning has room to improve it), and
saves the result as an ordinary Hugging Face model directory (safetensors weights, tokenizer files and a
`tiny_arith_meta.json` with the measured accuracy). The directory is cached on disk with
`remix_engine.cache.build_once` (temporary directory + rename under an exclusive file lock), so concurrent
builders never see a partial directory and a second call returns immediately.

Deliberately omitted: any larger model or chat template; the task exists to exercise the whole training
loop end to end on a CPU in seconds.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from remix_engine.cache import build_once, default_cache_dir, read_build_meta

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from remix_engine.data import Example

TINY_MODEL_VERSION = "v1"
META_FILENAME = "tiny_arith_meta.json"
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
# Printable ASCII plus newline and tab; specials first so their ids are 0..3.
VOCAB = [PAD, BOS, EOS, UNK] + [chr(c) for c in range(32, 127)] + ["\n", "\t"]
MAX_POSITIONS = 64
OPERAND_RANGE = range(10, 100)  # both operands have exactly two digits
EVAL_FRACTION_PER_MILLE = 100  # 10% of the (a, b) pairs are held out

# Pretraining budget: stop at the first check at or above the target accuracy, else after MAX_STEPS.
# Accuracy rises slowly to ~0.1, then jumps to ~0.9 within ~100 steps, so checks get denser once it moves.
SFT_BATCH_SIZE = 128
SFT_LR = 1e-3
SFT_WARMUP_STEPS = 50
SFT_MAX_STEPS = 1500
SFT_CHECK_EVERY_SLOW = 50
SFT_CHECK_EVERY_FAST = 10
SFT_FAST_CHECKS_FROM_ACCURACY = 0.08
SFT_CHECK_SIZE = 200
SFT_TARGET_ACCURACY = 0.35
SFT_NUM_THREADS = 1  # tiny matmuls: one thread is as fast, and far faster on a busy machine

Split = Literal["train", "eval"]


# --------------------------------------------------------------------------------------------- task


def format_prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def format_completion(answer: str) -> str:
    """The target completion text (the tokenizer's EOS follows it)."""
    return f"\\boxed{{{answer}}}"


def split_of(a: int, b: int) -> Split:
    # A hash of the ordered pair decides the split, so it never depends on n or on the seed.
    digest = hashlib.sha256(f"{a}+{b}".encode()).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % 1000 < EVAL_FRACTION_PER_MILLE else "train"


def addition_pairs(split: Split) -> list[tuple[int, int]]:
    """All (a, b) operand pairs of a split, in a fixed order; train and eval are disjoint."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    return [(a, b) for a in OPERAND_RANGE for b in OPERAND_RANGE if split_of(a, b) == split]


def sample_pairs(split: Split, n: int, seed: int) -> list[tuple[int, int]]:
    """n pairs of the split in a seeded random order; cycles through reshuffles when n exceeds the split."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = addition_pairs(split)
    rng = random.Random(f"{split}:{seed}")
    out: list[tuple[int, int]] = []
    while len(out) < n:
        order = pool[:]
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


def toy_examples(split: Split, n: int, seed: int) -> list[Example]:
    """n addition problems ("12+34=", answer "46") from the train or the held-out eval split."""
    from remix_engine.data import Example  # remix_engine.data imports nothing from here; kept lazy to stay light

    return [Example(prompt=format_prompt(a, b), answer=str(a + b)) for a, b in sample_pairs(split, n, seed)]


# ---------------------------------------------------------------------------------------- tokenizer


def build_char_tokenizer(max_positions: int = MAX_POSITIONS) -> PreTrainedTokenizerFast:
    """A character-level tokenizer (one token per character) that prepends <bos> to every text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # [\s\S] rather than "." so newlines are characters too (Oniguruma's "." skips "\n").
    core.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # join characters without separators
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=max_positions,
    )


# -------------------------------------------------------------------------------------------- model


def build_untrained_model(
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    max_positions: int = MAX_POSITIONS,
) -> LlamaForCausalLM:
    """A 4-layer Llama over the character vocabulary (by default the tiny arithmetic model), randomly
    initialised from `seed` without touching the global RNG."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def padded_sft_batch(rows: list[tuple[list[int], list[int]]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt ids, completion ids) rows as right-padded ids (N, L) and a mask (N, L) of completion tokens.

    The one supervised-batch layout of the builtin models' pretraining (toy_chat.py, toy_reasoning.py)."""
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(rows):
        ids[i, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        loss_mask[i, len(prompt) : len(prompt) + len(completion)] = True
    return ids, loss_mask


def _encode_pairs(
    tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded <bos>prompt+completion<eos> ids (N, L) and a mask (N, L) of completion tokens."""
    rows = []
    for a, b in pairs:
        prompt = tokenizer(format_prompt(a, b))["input_ids"]
        completion = tokenizer(format_completion(str(a + b)), add_special_tokens=False)["input_ids"]
        rows.append((prompt, completion + [tokenizer.eos_token_id]))
    return padded_sft_batch(rows, tokenizer.pad_token_id)


@torch.no_grad()
def greedy_accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[int, int]]) -> float:
    """Fraction of pairs whose greedy completion is exactly "\\boxed{a+b}" followed by <eos>."""
    was_training = model.training
    model.eval()
    prompts = tokenizer([format_prompt(a, b) for a, b in pairs], padding=True, return_tensors="pt")
    ids, mask = prompts["input_ids"], prompts["attention_mask"]  # (N, Lp) left-padded
    new_tokens = len(format_completion("199")) + 1
    for _ in range(new_tokens):  # no KV cache: sequences are a few tokens long
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1).logits
        next_ids = logits[:, -1].argmax(dim=-1, keepdim=True)  # (N, 1)
        ids = torch.cat([ids, next_ids], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
    model.train(was_training)
    generated = ids[:, prompts["input_ids"].shape[1] :].tolist()
    correct = 0
    for (a, b), row in zip(pairs, generated, strict=True):
        target = tokenizer(format_completion(str(a + b)), add_special_tokens=False)["input_ids"]
        correct += row[: len(target) + 1] == target + [tokenizer.eos_token_id]
    return correct / len(pairs)


def _lr_at(step: int) -> float:
    return SFT_LR * min(1.0, (step + 1) / SFT_WARMUP_STEPS)


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int) -> dict[str, float | int]:
    """Supervised training on the train split, stopping once held-out greedy accuracy reaches the target."""
    train_ids, train_loss_mask = _encode_pairs(tokenizer, addition_pairs("train"))
    check_pairs = sample_pairs("eval", SFT_CHECK_SIZE, seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    model.train()
    accuracy, last_check, step = 0.0, 0, 0
    for step in range(1, SFT_MAX_STEPS + 1):
        rows = torch.randint(len(train_ids), (SFT_BATCH_SIZE,), generator=generator)
        loss = sft_step(model, optimizer, train_ids[rows], train_loss_mask[rows], lr=_lr_at(step - 1))
        check_every = SFT_CHECK_EVERY_FAST if accuracy >= SFT_FAST_CHECKS_FROM_ACCURACY else SFT_CHECK_EVERY_SLOW
        if step - last_check >= check_every:
            accuracy, last_check = greedy_accuracy(model, tokenizer, check_pairs), step
            if accuracy >= SFT_TARGET_ACCURACY:
                break
    model.eval()
    eval_pairs = addition_pairs("eval")
    return {
        "sft_steps": step,
        "eval_accuracy": greedy_accuracy(model, tokenizer, eval_pairs),  # the whole held-out split
        "eval_size": len(eval_pairs),
        "final_sft_loss": loss,
    }


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, lr: float) -> float:
    """Back-propagate `loss` and take one clipped (norm 1) optimizer step at `lr`; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def sft_step(
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    lr: float,
) -> float:
    """One AdamW step of next-token cross-entropy on completion tokens only. ids, loss_mask: (B, L)."""
    logits = model(input_ids=ids).logits[:, :-1]  # (B, L-1, V); right padding: causal attention needs no mask
    targets, target_mask = ids[:, 1:], loss_mask[:, 1:]  # (B, L-1)
    loss = torch.nn.functional.cross_entropy(logits[target_mask], targets[target_mask])
    return optimizer_step(model, optimizer, loss, lr=lr)


# -------------------------------------------------------------------------------------------- cache


def tiny_model_dir(cache_dir: Path | None = None, seed: int = 0) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"tiny-arith-{TINY_MODEL_VERSION}-seed{seed}"


def write_pretrained_char_model(
    out_dir: Path,
    seed: int,
    *,
    max_positions: int,
    build_model: Callable[[PreTrainedTokenizerFast, int], LlamaForCausalLM],
    pretrain: Callable[[LlamaForCausalLM, PreTrainedTokenizerFast, int], dict[str, float | int]],
    meta_filename: str,
    meta: dict[str, str],
) -> None:
    """Build the character tokenizer and `build_model(tokenizer, seed)`, pretrain it on one torch thread
    (see SFT_NUM_THREADS), and save model, tokenizer and `meta` (with the build's size, time and
    `pretrain` statistics) into `out_dir`; the meta file is written last, as the completion marker."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(SFT_NUM_THREADS)  # restored below
    try:
        tokenizer = build_char_tokenizer(max_positions)
        model = build_model(tokenizer, seed)
        stats = pretrain(model, tokenizer, seed)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    full_meta = {
        **meta,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.perf_counter() - started, 2),
        **stats,
    }
    (out_dir / meta_filename).write_text(json.dumps(full_meta, indent=2))


def _write_tiny_model(out_dir: Path, seed: int) -> None:
    write_pretrained_char_model(
        out_dir,
        seed,
        max_positions=MAX_POSITIONS,
        build_model=build_untrained_model,
        pretrain=pretrain,
        meta_filename=META_FILENAME,
        meta={"version": TINY_MODEL_VERSION, "task": "2-digit addition: prompt 'a+b=', completion '\\boxed{a+b}'"},
    )


def build_tiny_model(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Path of the pretrained tiny arithmetic model directory, building it on first use (~1 minute on CPU)."""
    target = tiny_model_dir(cache_dir, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, lambda tmp: _write_tiny_model(tmp, seed), marker=META_FILENAME)


def read_tiny_model_meta(model_dir: Path) -> dict[str, Any]:
    return read_build_meta(model_dir, META_FILENAME)
