"""Replay buffer of the rollouts of the last N policies (ReMix Mix-PPG phase).

A FIFO over training steps: each step's fresh rollouts are pushed as one entry and entries
older than `history_window` steps are dropped. Sampling draws whole prompt groups uniformly
over all stored groups, so GRPO groups (and their stored group-normalised advantages) are
reused intact and each stored policy contributes in proportion to its share of the buffer
(p/N each when every step stores the same number of groups). Every stored response keeps its
behaviour log-probs and policy version, which the Mix-PPG loss needs to correct it, and its log-probs
under the KL anchor with the anchor's version: they hold until the anchor moves (reincarnation), so a
step that replays them under the same anchor need not score them again.

Deliberately omitted: priorities, per-sample reuse limits beyond the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

import torch

from remix_engine.batch import RolloutBatch

# Quantities that belong to one optimisation step and are recomputed whenever a sample is reused
# (values: by the PPO critic of the step that replays it, the centre of its value clip). ref_logp is
# not among them: it depends only on the anchor, whose version each entry records.
_STEP_LOCAL_FIELDS = ("old_logp", "prev_logp", "values")


class ReplayBuffer:
    def __init__(self, history_window: int, pad_token_id: int) -> None:
        if history_window < 1:
            raise ValueError(f"history_window must be >= 1, got {history_window}")
        self.history_window = history_window
        self.pad_token_id = pad_token_id
        # (step, rows, version of the anchor their ref_logp was computed under; None: no ref_logp kept)
        self._entries: deque[tuple[int, RolloutBatch, int | None]] = deque()
        self.total_replayed = 0  # responses handed out by sample(), over the whole run

    def __len__(self) -> int:
        """Number of stored responses."""
        return sum(len(batch) for _, batch, _ in self._entries)

    @property
    def steps(self) -> list[int]:
        return [step for step, _, _ in self._entries]

    @property
    def num_groups(self) -> int:
        return sum(int(batch.group_ids.unique().numel()) for _, batch, _ in self._entries)

    def add(self, step: int, batch: RolloutBatch, *, anchor_version: int | None = None) -> None:
        """Store one step's fresh rollouts (with behaviour log-probs) and evict old steps.

        Their ref_logp is kept when `anchor_version` names the anchor it was computed under."""
        if batch.behavior_logp is None or batch.advantages is None:
            raise ValueError("only rollouts with behavior_logp and advantages can be replayed")
        if self._entries and step <= self._entries[-1][0]:
            raise ValueError(f"replay steps must increase: got {step} after {self._entries[-1][0]}")
        cleared: dict[str, Any] = dict.fromkeys(_STEP_LOCAL_FIELDS)  # optional tensors, so None is theirs to take
        stored = replace(batch.to("cpu"), **cleared)
        stored.is_replay = torch.ones(len(stored), dtype=torch.bool)
        if anchor_version is None:
            stored.ref_logp = None
        self._entries.append((step, stored, None if stored.ref_logp is None else anchor_version))
        while self._entries and self._entries[0][0] <= step - self.history_window:
            self._entries.popleft()

    def sample(
        self, num_groups: int, generator: torch.Generator, *, anchor_version: int | None = None
    ) -> RolloutBatch | None:
        """Whole groups drawn uniformly without replacement across the stored steps.

        Rows whose stored ref_logp was computed under anchor `anchor_version` bring it along; the other
        rows' ref_logp is NaN (not known under this anchor), or the field None when no row has one.
        """
        if num_groups <= 0 or not self._entries:
            return None
        groups = [
            (entry, int(gid))
            for entry, (_, batch, _) in enumerate(self._entries)
            for gid in batch.group_ids.unique().tolist()
        ]
        picks = torch.randperm(len(groups), generator=generator)[: min(num_groups, len(groups))]
        parts, known = [], []
        for entry_index in sorted({groups[i][0] for i in picks.tolist()}):
            wanted = torch.tensor([groups[i][1] for i in picks.tolist() if groups[i][0] == entry_index])
            _, batch, version = self._entries[entry_index]
            rows = torch.nonzero(torch.isin(batch.group_ids, wanted)).flatten()
            parts.append(batch.select(rows))
            known.append(anchor_version is not None and version == anchor_version)
        for part, valid in zip(parts, known, strict=True):
            if not any(known):
                part.ref_logp = None
            elif not valid:
                part.ref_logp = torch.full(part.response_ids.shape, float("nan"))
        sampled = RolloutBatch.concat(parts, self.pad_token_id)
        self.total_replayed += len(sampled)
        return sampled

    def clear(self) -> None:
        self._entries.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "history_window": self.history_window,
            "total_replayed": self.total_replayed,
            "entries": [(step, batch.state_dict()) for step, batch, _ in self._entries],
            "anchor_versions": [version for _, _, version in self._entries],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history_window = int(state["history_window"])
        self.total_replayed = int(state["total_replayed"])
        # A buffer saved before anchor versions existed kept no ref_logp.
        versions = state.get("anchor_versions", [None] * len(state["entries"]))
        self._entries = deque(
            _entry(int(step), RolloutBatch.from_state_dict(batch), version)
            for (step, batch), version in zip(state["entries"], versions, strict=True)
        )


def _entry(step: int, rows: RolloutBatch, anchor_version: int | None) -> tuple[int, RolloutBatch, int | None]:
    if anchor_version is None:
        rows.ref_logp = None  # without the anchor it came from, a ref_logp cannot be trusted
    return step, rows, anchor_version
