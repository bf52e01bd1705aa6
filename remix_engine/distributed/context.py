"""This process's place in a torchrun job (rank, world size) and the collectives the trainer uses.

A single process gets the default `DistContext()`, on which every collective is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from remix_engine.batch import RolloutBatch

# Rank 0 alone evaluates and writes checkpoints while the others wait in the next collective:
# allow that much longer than NCCL's default 10 minutes.
PROCESS_GROUP_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the default is a single process (every helper is then a no-op)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_range(self, count: int) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of `count` items, sizes differing by at most one."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    # ------------------------------------------------------------------ collectives
    def all_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(tensor)
        return float(tensor.item())

    def all_max(self, value: int) -> int:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=_comm_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's flag on every rank (e.g. cancellation, which only rank 0's callbacks see)."""
        if not self.enabled:
            return flag
        holder = [flag]
        dist.broadcast_object_list(holder, src=0)
        return bool(holder[0])

    def gather_batch(self, batch: RolloutBatch, pad_token_id: int) -> RolloutBatch:
        """All ranks' batches joined in rank order, on every rank."""
        if not self.enabled:
            return batch
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, batch.to("cpu"))
        return RolloutBatch.concat(parts, pad_token_id).to(batch.response_ids.device)

    def combine_metrics(self, metrics: dict[str, float], summed: tuple[str, ...] = ()) -> dict[str, float]:
        """Keys in `summed` add up over ranks; the others are averaged over the ranks that report them."""
        if not self.enabled:
            return metrics
        reports: list[Any] = [None] * self.world_size
        dist.all_gather_object(reports, metrics)
        keys = sorted({k for report in reports for k in report})
        out: dict[str, float] = {}
        for key in keys:
            values = [report[key] for report in reports if key in report]
            out[key] = sum(values) if key in summed else sum(values) / len(values)
        return out

    def own_groups(self, batch: RolloutBatch | None) -> tuple[RolloutBatch | None, torch.Tensor]:
        """This rank's contiguous share of the whole prompt groups of `batch`, and their row positions."""
        if batch is None:
            return None, torch.zeros(0, dtype=torch.long)
        if not self.enabled:
            return batch, torch.arange(len(batch))
        groups = list(dict.fromkeys(batch.group_ids.tolist()))  # in order of first appearance
        start, stop = self.shard_range(len(groups))
        wanted = torch.tensor(groups[start:stop], dtype=torch.long, device=batch.group_ids.device)
        rows = torch.nonzero(torch.isin(batch.group_ids, wanted)).flatten().cpu()
        return (batch.select(rows) if len(rows) else None), rows


def init_from_env(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a single process gets DistContext().

    On CUDA each process uses the GPU of its LOCAL_RANK (nccl); on CPU the gloo backend.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError("the process group does not match WORLD_SIZE/RANK of the environment")
    return DistContext(rank=rank, world_size=world_size), device


def shutdown() -> None:
    """Wait for every rank, then leave the process group (end of a torchrun job)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    backend = dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
