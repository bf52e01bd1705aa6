"""Deterministic prompt order and per-response sampling seeds.

Prompts are visited in seeded shuffled epochs; the sampler's position is part of the trainer
state so a resumed run sees exactly the prompts it would have seen. Response seeds are derived
from (run seed, step, prompt slot, sample index), so every response is reproducible on its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def response_seed(run_seed: int, step: int, prompt_slot: int, sample_index: int) -> int:
    digest = hashlib.blake2b(f"{run_seed}:{step}:{prompt_slot}:{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


class PromptSampler:
    """Yields dataset indices in reshuffled epochs, without repeats inside an epoch."""

    def __init__(self, num_prompts: int, seed: int) -> None:
        if num_prompts < 1:
            raise ValueError("the training set has no prompts")
        self.num_prompts = num_prompts
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_prompts, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.position == self.num_prompts:
                self.epoch += 1
                self.position = 0
                self._order = self._shuffle(self.epoch)
            take = min(count - len(out), self.num_prompts - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._shuffle(self.epoch)
