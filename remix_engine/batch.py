"""RolloutBatch: the tensors of a batch of sampled responses, as they move through the loop.

Shapes: B responses; Lp prompt tokens (left-padded); Lr response tokens (right-padded).
Every response carries the policy version that generated it and its sampling seed, so a
replayed sample can be importance-corrected against its own behaviour policy, and whether it was
truncated (it reached rollout.max_new_tokens without an EOS token or a stop string), which
`reward.overlong` reads: `loss_mask` is the response mask without the rows it excludes from the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

# Fields holding one tensor row per response, padded along dim 1 when batches are joined.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RIGHT_PADDED = (
    "response_ids",
    "response_mask",
    "rollout_logp",
    "behavior_logp",
    "old_logp",
    "ref_logp",
    "prev_logp",
    "advantages",
    "returns",
    "values",
)

# What a list field holds for rows of a batch that lacks it, when joined with batches that have it.
_LIST_FILLERS: dict[str, Any] = {"rows": dict, "completions": str, "answers": str, "prompts": str}


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # (B, Lp) long, left-padded
    prompt_mask: torch.Tensor  # (B, Lp) bool
    response_ids: torch.Tensor  # (B, Lr) long, right-padded
    response_mask: torch.Tensor  # (B, Lr) bool: generated tokens, EOS included
    rollout_logp: torch.Tensor  # (B, Lr) float: log-probs reported by the rollout engine
    policy_version: torch.Tensor  # (B,) long: training step whose policy sampled the response
    seeds: torch.Tensor  # (B,) long: sampling seed of each response
    group_ids: torch.Tensor  # (B,) long: responses to the same prompt share a group id
    prompt_index: torch.Tensor  # (B,) long: row of the prompt in the training set
    completions: list[str] = field(default_factory=list)  # decoded responses
    answers: list[str] = field(default_factory=list)  # reference answers, one per response
    prompts: list[str] = field(default_factory=list)  # prompt texts, one per response
    # What the rewards see of each response's dataset row (rewards.reward_row; JSON values only),
    # one per response: a group's responses share their prompt's dict. Set by the trainer.
    rows: list[dict[str, Any]] = field(default_factory=list)
    # Filled in by the trainer:
    behavior_logp: torch.Tensor | None = None  # (B, Lr) learner log-probs of the behaviour policy
    old_logp: torch.Tensor | None = None  # (B, Lr) log-probs under pi_k, the policy before this update
    ref_logp: torch.Tensor | None = None  # (B, Lr) log-probs under the KL anchor (base, or pi_T)
    prev_logp: torch.Tensor | None = None  # (B, Lr) log-probs under the precedent policy pi_{k-1}
    rewards: torch.Tensor | None = None  # (B,) float: scalar reward per response
    correct: torch.Tensor | None = None  # (B,) bool: the accuracy reward was positive
    advantages: torch.Tensor | None = None  # (B, Lr) float
    returns: torch.Tensor | None = None  # (B, Lr) float (PPO)
    values: torch.Tensor | None = None  # (B, Lr) float (PPO)
    is_replay: torch.Tensor | None = None  # (B,) bool: sample came from the replay buffer
    # Set by the rollout engines: (B,) bool, the response hit max_new_tokens without an EOS token or a
    # stop string. None only in batches built by hand (tests) or stored before the flag existed.
    truncated: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)  # (B,)

    @property
    def truncated_rows(self) -> torch.Tensor:
        """(B,) bool: `truncated`, all False when the batch carries no flag."""
        if self.truncated is None:
            return torch.zeros(len(self), dtype=torch.bool, device=self.response_ids.device)
        return self.truncated.bool()

    def loss_mask(self, *, exclude_truncated: bool = False) -> torch.Tensor:
        """(B, Lr) bool: the tokens the loss terms see; with `exclude_truncated` truncated rows see none
        (reward.overlong: mask). The forward passes still read `response_mask`."""
        mask = self.response_mask.bool()
        if exclude_truncated:
            mask = mask & ~self.truncated_rows.unsqueeze(1)
        return mask

    def select(self, index: torch.Tensor | list[int]) -> RolloutBatch:
        """Rows `index` of every field, as a new batch."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                out[f.name] = value[idx]
            elif isinstance(value, list):
                out[f.name] = [value[i] for i in idx.tolist()] if value else []
            else:
                out[f.name] = value
        return RolloutBatch(**out)

    def trimmed(self) -> RolloutBatch:
        """The same rows without the columns that are padding in every row: prompt columns on the left,
        response columns past the longest response. A forward over it scores each response as the
        untrimmed batch does (position ids count real tokens); one column of each side always stays."""
        used_prompt = torch.nonzero(self.prompt_mask.bool().any(dim=0)).flatten()
        used_response = torch.nonzero(self.response_mask.bool().any(dim=0)).flatten()
        prompt_width = self.prompt_ids.shape[1]
        first = min(int(used_prompt[0]), prompt_width - 1) if len(used_prompt) else prompt_width - 1
        width = int(used_response[-1]) + 1 if len(used_response) else 1
        if first == 0 and width == self.response_ids.shape[1]:
            return self
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name in _LEFT_PADDED:
                out[f.name] = value[:, first:]
            elif value is not None and f.name in _RIGHT_PADDED:
                out[f.name] = value[:, :width]
        return replace(self, **out)

    def to(self, device: torch.device | str) -> RolloutBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    @staticmethod
    def concat(batches: list[RolloutBatch], pad_token_id: int) -> RolloutBatch:
        """Join batches, re-padding prompts on the left and responses on the right."""
        if len(batches) == 1:
            return batches[0]
        out: dict[str, Any] = {}
        for f in fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            if f.name == "truncated" and any(v is not None for v in values):
                values = [b.truncated_rows for b in batches]  # a batch stored before the flag: none truncated
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise ValueError(f"cannot concatenate batches where only some have '{f.name}'")
            elif isinstance(values[0], list):
                if any(values) and not all(values):  # e.g. replayed rows saved before a field existed
                    filler = _LIST_FILLERS.get(f.name)
                    values = [
                        v or [filler() if filler else None for _ in range(len(b))]
                        for v, b in zip(values, batches, strict=True)
                    ]
                out[f.name] = [x for v in values for x in v]
            elif f.name in _LEFT_PADDED or f.name in _RIGHT_PADDED:
                pad = pad_token_id if f.name in ("prompt_ids", "response_ids") else 0
                out[f.name] = pad_cat(values, pad, left=f.name in _LEFT_PADDED)
            else:
                out[f.name] = torch.cat(values, dim=0)
        return RolloutBatch(**out)

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_state_dict(state: dict[str, Any]) -> RolloutBatch:
        return RolloutBatch(**state)  # fields added since the state was saved keep their defaults


def pad_cat(tensors: list[torch.Tensor], pad_value: float = 0, *, left: bool) -> torch.Tensor:
    """Join (b_i, L_i) tensors along rows, padding each to the widest with `pad_value` on the left or right.

    The one helper for joining padded rows: batches here, generation batches in the rollout engines.
    """
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        extra = width - t.shape[1]
        if extra:
            filler = torch.full((t.shape[0], extra), pad_value, dtype=t.dtype, device=t.device)
            t = torch.cat([filler, t], dim=1) if left else torch.cat([t, filler], dim=1)
        padded.append(t)
    return torch.cat(padded, dim=0)
