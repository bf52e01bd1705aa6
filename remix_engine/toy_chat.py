r"""A small *chat* model that needs no download: `builtin:tiny-chat`, 2-digit addition in ChatML.

`build_tiny_chat_model()` writes, from a seed, a Hugging Face folder with the structure of a released chat
model: the Qwen2.5-Instruct stand-in of `remix_engine/standins/` (`Qwen2ForCausalLM` with q/k/v biases, GQA
and tied embeddings; Qwen's byte-level BPE pipeline with its added tokens; Qwen2.5-Instruct's ChatML
template verbatim, which inserts Qwen's default system prompt; eos ``<|im_end|>``, pad ``<|endoftext|>``,
generation stopping at ``[<|im_end|>, <|endoftext|>]``), at a small size (hidden 128, 4 layers, 4 heads,
2 KV heads, MLP 256: 0.74M parameters), and supervised-pretrains it on chat-formatted addition:

    <|im_start|>system\nYou are Qwen, ...<|im_end|>\n<|im_start|>user\n12+34=<|im_end|>\n<|im_start|>assistant\n
    -> \boxed{46}<|im_end|>

with the user turn written either as ``12+34=`` (what `builtin:addition` yields) or as ``What is 12+34?``.
Prompts are rendered with the tokenizer's own chat template exactly as `apply_chat_template(...,
add_generation_prompt=True)` does, which is what a job with `data.chat_template: auto` sends the model.
Pretraining stops at the first check whose held-out greedy accuracy (``12+34=`` turns) reaches
`SFT_TARGET_ACCURACY`, so reinforcement finetuning has room to raise it (seed 0: 420 steps of 96 rows,
about 1.5 minutes of one CPU core, 0.38 held-out greedy accuracy); the rows share their system turn, which
runs once per step (`shared_prefix`). The folder is cached like the tiny arithmetic model
(`remix_engine.cache.build_once`, under ``$REMIX_CACHE_DIR``) with a `tiny_chat_meta.json` recording the
measured accuracies.

The operand pairs and their train/eval split are those of the builtin addition task (`remix_engine.toy`),
so `builtin:addition`'s held-out split is held out here too. Deliberately unlike `builtin:tiny-arith`
(kept as it is: benchmarks depend on its behaviour): a BPE tokenizer in which the prompt is a ~47-token chat
turn, not 7 characters.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from remix_engine.cache import build_once, default_cache_dir, read_build_meta
from remix_engine.toy import (
    SFT_NUM_THREADS,
    addition_pairs,
    format_completion,
    format_prompt,
    optimizer_step,
    padded_sft_batch,
    sample_pairs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TINY_CHAT_MODEL_VERSION = "v1"
META_FILENAME = "tiny_chat_meta.json"
FAMILY = "qwen2.5-instruct"
# The model: a Qwen2 the size of the tiny Llama (its vocabulary is the stand-in's 1024 BPE tokens + Qwen's 22).
MODEL_SIZES: dict[str, Any] = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 256,
}
QUESTION_FRACTION = 0.5  # of the pretraining rows whose user turn is "What is a+b?" rather than "a+b="

# Pretraining budget: stop at the first check at or above the target accuracy, else after MAX_STEPS.
SFT_BATCH_SIZE = 96
SFT_LR = 2.5e-3
SFT_WARMUP_STEPS = 30
SFT_MAX_STEPS = 1500
SFT_CHECK_EVERY_SLOW = 50
SFT_CHECK_EVERY_FAST = 10
SFT_FAST_CHECKS_FROM_ACCURACY = 0.08
SFT_CHECK_SIZE = 200
SFT_TARGET_ACCURACY = 0.35
COMPLETION_TOKENS = 8  # "\boxed{198}" is 7 BPE tokens here, then <|im_end|>


# --------------------------------------------------------------------------------------------- task


def question_prompt(a: int, b: int) -> str:
    """The other way the user turn is written: "What is 12+34?"."""
    return f"What is {a}+{b}?"


def user_turns(pairs: list[tuple[int, int]], *, question: bool = False) -> list[str]:
    return [question_prompt(a, b) if question else format_prompt(a, b) for a, b in pairs]


def chat_prompts(tokenizer: PreTrainedTokenizerBase, turns: list[str]) -> list[str]:
    """Each user turn rendered with the tokenizer's chat template and the generation prompt."""
    # tokenize=False makes apply_chat_template return the rendered text.
    return [
        cast(
            str,
            tokenizer.apply_chat_template(
                [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
            ),
        )
        for turn in turns
    ]


# -------------------------------------------------------------------------------------------- model


def build_untrained_chat_model(out_dir: Path, seed: int) -> Path:
    """The stand-in folder (tokenizer, chat template, config, random weights from `seed`) at MODEL_SIZES."""
    from remix_engine.standins import build_standin

    return build_standin(FAMILY, out_dir, seed=seed, **MODEL_SIZES)


def shared_prefix(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> str:
    """The longest common prefix of the rendered prompts that ends where a user turn starts.

    Every prompt starts with the same system turn and "<|im_start|>user\n"; pretraining runs that prefix
    once per step (batch 1) and the rest of every row on top of its KV cache, which is the same
    computation as running each row whole and about 2.5 times cheaper.
    """
    first = prompts[0]
    length = min(len(p) for p in prompts)
    common = next((i for i in range(length) if any(p[i] != first[i] for p in prompts)), length)
    marker = "<|im_start|>user\n"
    cut = first.rfind(marker, 0, common)
    if cut < 0:
        raise ValueError("the rendered prompts share no system turn")
    return first[: cut + len(marker)]


def _encode(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], answers: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prefix ids (1, P), right-padded rest-of-prompt+completion+<|im_end|> ids (N, L), completion mask (N, L)).

    prefix + rest tokenizes each full text exactly as the tokenizer does (checked).
    """
    prefix = shared_prefix(tokenizer, prompts)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        rest = tokenizer(prompt[len(prefix) :], add_special_tokens=False)["input_ids"]
        if prefix_ids + rest != tokenizer(prompt, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"the prompt does not tokenize as its shared prefix and the rest: {prompt!r}")
        completion = tokenizer(format_completion(answer), add_special_tokens=False)["input_ids"]
        rows.append((rest, completion + [tokenizer.eos_token_id]))
    ids, loss_mask = padded_sft_batch(rows, tokenizer.pad_token_id)
    return torch.tensor([prefix_ids]), ids, loss_mask


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int
) -> list[list[int]]:
    """Greedy continuation ids of each rendered prompt (left-padded batch, KV cache), up to max_new_tokens."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (N, Lp)
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, logits_to_keep=1)
    generated = []
    for _ in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # (N, 1)
        generated.append(next_ids)
        mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = model(
            input_ids=next_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    model.train(was_training)
    return torch.cat(generated, dim=1).tolist()


def greedy_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[int, int]],
    *,
    question: bool = False,
    batch_size: int = 256,
) -> float:
    """Fraction of pairs whose greedy reply to the chat-templated prompt is exactly "\\boxed{a+b}<|im_end|>"."""
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompts = chat_prompts(tokenizer, user_turns(chunk, question=question))
        rows = greedy_completions(model, tokenizer, prompts, COMPLETION_TOKENS)
        for (a, b), row in zip(chunk, rows, strict=True):
            target = tokenizer(format_completion(str(a + b)), add_special_tokens=False)["input_ids"]
            correct += row[: len(target) + 1] == target + [tokenizer.eos_token_id]
    return correct / len(pairs)


def _lr_at(step: int) -> float:
    return SFT_LR * min(1.0, (step + 1) / SFT_WARMUP_STEPS)


def _training_rows(tokenizer: PreTrainedTokenizerBase, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pairs = addition_pairs("train")
    generator = torch.Generator().manual_seed(seed)
    question = (torch.rand(len(pairs), generator=generator) < QUESTION_FRACTION).tolist()
    turns = [question_prompt(a, b) if q else format_prompt(a, b) for (a, b), q in zip(pairs, question, strict=True)]
    return _encode(tokenizer, chat_prompts(tokenizer, turns), [str(a + b) for a, b in pairs])


def pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> dict[str, float | int]:
    """Supervised training on the train split, stopping once held-out greedy accuracy reaches the target."""
    prefix_ids, train_ids, train_loss_mask = _training_rows(tokenizer, seed)
    check_pairs = sample_pairs("eval", SFT_CHECK_SIZE, seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    model.train()
    accuracy, last_check, step, loss = 0.0, 0, 0, float("nan")
    for step in range(1, SFT_MAX_STEPS + 1):
        rows = torch.randint(len(train_ids), (SFT_BATCH_SIZE,), generator=generator)
        loss = _sft_step(model, optimizer, prefix_ids, train_ids[rows], train_loss_mask[rows], lr=_lr_at(step - 1))
        check_every = SFT_CHECK_EVERY_FAST if accuracy >= SFT_FAST_CHECKS_FROM_ACCURACY else SFT_CHECK_EVERY_SLOW
        if step - last_check >= check_every:
            accuracy, last_check = greedy_accuracy(model, tokenizer, check_pairs), step
            if accuracy >= SFT_TARGET_ACCURACY:
                break
    model.eval()
    eval_pairs = addition_pairs("eval")
    return {
        "sft_steps": step,
        "eval_accuracy": greedy_accuracy(model, tokenizer, eval_pairs),  # the whole held-out split, "a+b="
        "eval_accuracy_question": greedy_accuracy(model, tokenizer, eval_pairs, question=True),
        "eval_size": len(eval_pairs),
        "final_sft_loss": loss,
    }


def _sft_step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    prefix_ids: torch.Tensor,
    ids: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    lr: float,
) -> float:
    """One AdamW step of next-token cross-entropy on completion tokens only.

    prefix_ids: (1, P), shared by every row; ids, loss_mask: (B, L), the rest of each row. The prefix runs
    once, with gradients, and its KV cache is repeated for the batch.
    """
    prefix = model(input_ids=prefix_ids, use_cache=True)
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(ids.shape[0])
    # right padding: causal attention needs no mask; positions continue after the prefix
    hidden = model.base_model(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state[:, :-1]
    targets, target_mask = ids[:, 1:], loss_mask[:, 1:]  # (B, L-1)
    logits = model.get_output_embeddings()(hidden[target_mask])  # (T, V): only where a completion token is next
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[target_mask])
    return optimizer_step(model, optimizer, loss, lr=lr)


# -------------------------------------------------------------------------------------------- cache


def tiny_chat_model_dir(cache_dir: Path | None = None, seed: int = 0) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"tiny-chat-{TINY_CHAT_MODEL_VERSION}-seed{seed}"


def _write_tiny_chat_model(out_dir: Path, seed: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remix_engine.standins import META_FILENAME as STANDIN_META

    started = time.perf_counter()
    base = build_untrained_chat_model(out_dir / "untrained", seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    threads = torch.get_num_threads()
    torch.set_num_threads(SFT_NUM_THREADS)  # restored below; tiny matmuls (see remix_engine.toy)
    try:
        stats = pretrain(model, tokenizer, seed)
    finally:
        torch.set_num_threads(threads)
    for item in base.iterdir():  # the stand-in's tokenizer files, chat template and generation config
        if item.name not in (STANDIN_META, "model.safetensors", "config.json"):
            shutil.copy2(item, out_dir / item.name)
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.rmtree(base)
    meta = {
        "version": TINY_CHAT_MODEL_VERSION,
        "seed": seed,
        "family": FAMILY,
        "architecture": type(model).__name__,
        **MODEL_SIZES,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.perf_counter() - started, 2),
        "task": "2-digit addition in ChatML: user 'a+b=' or 'What is a+b?', assistant '\\boxed{a+b}'",
        **stats,
    }
    (out_dir / META_FILENAME).write_text(json.dumps(meta, indent=2))  # written last: completion marker


def build_tiny_chat_model(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Path of the pretrained tiny chat model directory, building it on first use (about a minute on CPU)."""
    target = tiny_chat_model_dir(cache_dir, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, lambda tmp: _write_tiny_chat_model(tmp, seed), marker=META_FILENAME)


def read_tiny_chat_model_meta(model_dir: Path) -> dict[str, Any]:
    return read_build_meta(model_dir, META_FILENAME)
