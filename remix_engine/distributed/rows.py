"""Rows of the step's global batch held by this process, and the weight of its share of a loss."""

from __future__ import annotations

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig
from remix_engine.distributed.context import DistContext
from remix_engine.losses import agg_denominator


class RowMap:
    """Where the rows of this rank's batch sit in the step's global batch (fresh rows, then replayed)."""

    def __init__(self, global_index: torch.Tensor, total: int) -> None:
        self.global_index = global_index  # (B_local,) global row id of each local row
        self.total = total
        self._local = torch.full((total,), -1, dtype=torch.long)
        self._local[global_index] = torch.arange(len(global_index))

    def local_rows(self, global_rows: torch.Tensor) -> torch.Tensor:
        """Local positions of those of `global_rows` this rank holds, in the order given."""
        positions = self._local[global_rows]
        return positions[positions >= 0]


def local_minibatch(
    batch: RolloutBatch,
    local_rows: torch.Tensor,
    ctx: DistContext,
    aggregation: str,
    *,
    exclude_truncated: bool = False,
) -> tuple[RolloutBatch, float]:
    """This process's rows of a minibatch, and the weight of its loss (collective: every rank calls it).

    Each process's loss is normalised by its own aggregation denominator (e.g. its valid tokens);
    weighting it by world_size * local / global denominator makes DDP's gradient average equal the
    gradient of the single-process loss over the whole minibatch. A process holding none of the
    rows still runs a forward and backward (DDP needs every process) on a fully masked row, weight 0.
    With `exclude_truncated` the denominators count the tokens the loss sees (RolloutBatch.loss_mask,
    reward.overlong 'mask').
    """
    if len(local_rows) == 0:
        placeholder = batch.select([0])
        placeholder.response_mask = torch.zeros_like(placeholder.response_mask)
        ctx.all_sum(0.0)
        return placeholder, 0.0
    mb = batch.select(local_rows)
    local_den = float(agg_denominator(mb.loss_mask(exclude_truncated=exclude_truncated), aggregation))
    global_den = ctx.all_sum(local_den)
    return mb, ctx.world_size * local_den / max(global_den, 1.0)


def check_shardable(cfg: TrainConfig, world_size: int) -> None:
    """Every process needs at least one fresh prompt group in every step."""
    fewest_fresh = cfg.fewest_fresh_groups
    if fewest_fresh < world_size:
        raise ValueError(
            f"{world_size} processes need at least as many fresh prompt groups per step, "
            f"but a step can have only {fewest_fresh}: raise rollout.prompts_per_step"
        )
