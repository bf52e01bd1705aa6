"""What every rollout engine shares: the `RolloutEngine` protocol, generate's argument checks and group
layout, where a response ends (`finish_response`), and the assembly of the `RolloutBatch` it returns.

Where a response ends is decided the same way for both engines: at its first EOS token, or at the
token that completes the first of `rollout.stop` in its decoded text, whichever comes first. The
trained tokens end with that token; the completion text ends with the stop string (kept, as vLLM's
include_stop_str_in_output, and as transformers keeps the tokens). A response that ends on neither
within max_new_tokens is `truncated`. The engines only stop generating there: hf.py's
`StopStringCriteria` in one, vLLM's detokenizer in the other.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from remix_engine.batch import RolloutBatch


class RolloutEngine(Protocol):
    def generate(
        self,
        prompts: list[str],
        answers: list[str],
        prompt_index: list[int],
        *,
        group_size: int,
        seeds: list[int],
        policy_version: int,
        group_id_start: int,
    ) -> RolloutBatch:
        """group_size responses per prompt: response i*group_size+j answers prompt i with that seed.

        Response r uses seeds[r]; all responses to prompt i share group id group_id_start + i.
        """
        ...

    def greedy(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy completions (for evaluation), decoded without special tokens."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""
        ...


def check_generate_args(
    prompts: list[str], answers: list[str], prompt_index: list[int], group_size: int, seeds: list[int]
) -> None:
    """The argument checks every RolloutEngine.generate makes."""
    if not (len(prompts) == len(answers) == len(prompt_index)):
        raise ValueError("prompts, answers and prompt_index must have the same length")
    if len(seeds) != len(prompts) * group_size:
        raise ValueError(f"need len(prompts) * group_size = {len(prompts) * group_size} seeds, got {len(seeds)}")


def prompt_of_each_response(
    prompts: list[str], answers: list[str], prompt_index: list[int], group_size: int, seeds: list[int]
) -> list[int]:
    """generate's preamble: check its arguments, then the prompt each response answers (group_size each)."""
    check_generate_args(prompts, answers, prompt_index, group_size, seeds)
    return [i for i in range(len(prompts)) for _ in range(group_size)]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens a response ends at: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.discard(None)
    if not ids:
        raise ValueError("the tokenizer and the model's generation config define no eos token to stop at")
    return sorted(ids)


def decode_response(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def first_stop_end(text: str, stop_strings: tuple[str, ...] | list[str]) -> int | None:
    """Character offset just after the earliest-ending stop string in `text`; None when there is none."""
    ends = [text.find(s) + len(s) for s in stop_strings if s in text]
    return min(ends) if ends else None


def finish_response(
    tokens: list[int],
    tokenizer: Any,
    stop_ids: list[int],
    stop_strings: tuple[str, ...] | list[str] = (),
    *,
    stopped: bool = False,
) -> tuple[int, str, bool]:
    """Where one generated response ends: (tokens kept, completion text, truncated).

    `tokens` are the ids the engine generated (nothing after its stop). The response ends with its first
    stop token (EOS), or with the token whose text completes a stop string, whichever comes first; its
    text is cut just after that stop string (kept). `stopped` says the engine itself reported a stop
    (vLLM's finish_reason "stop"), which also rules out truncation. Truncated: it ended on neither.
    """
    stop_set = set(stop_ids)
    end = next((i + 1 for i, token in enumerate(tokens) if token in stop_set), None)
    ended = end is not None or stopped
    kept = list(tokens[: end if end is not None else len(tokens)])
    if stop_strings:
        text = decode_response(tokenizer, kept)
        if first_stop_end(text, stop_strings) is not None:
            # The shortest prefix whose text holds a stop string (prefix texts only grow with the prefix).
            low, high = 1, len(kept)
            while low < high:
                middle = (low + high) // 2
                if first_stop_end(decode_response(tokenizer, kept[:middle]), stop_strings) is None:
                    low = middle + 1
                else:
                    high = middle
            text = decode_response(tokenizer, kept[:low])
            return low, text[: first_stop_end(text, stop_strings)], False
        return len(kept), text, not ended
    return len(kept), decode_response(tokenizer, kept), not ended


def assemble_batch(
    *,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    rollout_logp: torch.Tensor,
    completions: list[str],
    truncated: torch.Tensor,
    rows: list[int],
    prompts: list[str],
    answers: list[str],
    prompt_index: list[int],
    seeds: list[int],
    policy_version: int,
    group_id_start: int,
    pad_token_id: int,
    device: torch.device,
) -> RolloutBatch:
    """The RolloutBatch of generated responses, on `device`.

    Ids and masks are (B, Lp) left-padded and (B, Lr) right-padded; whatever lies outside the masks is
    overwritten (pad ids, zero log-probs), so no engine's padding value reaches the learner. `rows`
    names the prompt of each response (`prompt_of_each_response`).
    """
    return RolloutBatch(
        prompt_ids=prompt_ids.masked_fill(~prompt_mask, pad_token_id).to(device),
        prompt_mask=prompt_mask.to(device),
        response_ids=response_ids.masked_fill(~response_mask, pad_token_id).to(device),
        response_mask=response_mask.to(device),
        rollout_logp=rollout_logp.masked_fill(~response_mask, 0.0).to(device),
        policy_version=torch.full((len(rows),), policy_version, dtype=torch.long, device=device),
        seeds=torch.tensor(seeds, dtype=torch.long, device=device),
        group_ids=torch.tensor([group_id_start + i for i in rows], dtype=torch.long, device=device),
        prompt_index=torch.tensor([prompt_index[i] for i in rows], dtype=torch.long, device=device),
        completions=completions,
        answers=[answers[i] for i in rows],
        prompts=[prompts[i] for i in rows],
        truncated=truncated.to(device),
    )
