"""Data-parallel training of one job over several processes (torchrun), equal to one process.

Launched as `torchrun --nproc_per_node=N -m remix_engine.cli train job.yaml` (see
`torchrun_command`), or by the worker for a job with `distributed.num_processes: N`
(worker/distributed_entry.py), every process runs the same Trainer on the same seed. Per step:
  rollout    each rank samples a contiguous shard of the step's prompt groups; response seeds depend
             on the global prompt slot, so the union of the shards is the single-process batch.
             GRPO groups are never split across ranks.
  scoring    rewards, behaviour log-probs and values are computed on the shard; the scored shards are
             gathered so advantages (group normalisation, GAE whitening) and step metrics are computed
             on the whole batch by every rank, exactly as one process would.
  replay     every rank keeps the whole buffer (it is filled from the gathered batch) and draws from
             it with the shared generator, then trains on its own groups of the draw. Replicating the
             buffer (CPU memory, token ids) keeps draws identical and a rank-0 checkpoint complete,
             so a job resumes with any number of processes.
  learner    minibatches are the single-process ones (same permutation over global row ids); each rank
             computes the loss on its rows, weighted by its share of the global aggregation
             denominator (e.g. its valid tokens over all ranks' tokens for token-mean), and DDP averages
             gradients, so the update equals the single-process update up to float summation order.
  output     only rank 0 calls the callbacks and writes checkpoints, metrics and evaluations.

Strategies for the learner:
  ddp        the trained module is wrapped in DistributedDataParallel; every rank holds the whole
             model, its gradients and optimizer state.
  fsdp       the learner trains an FSDP2 (`fully_shard`) copy of the model, one shard group per decoder
             layer: trained parameters, gradients and optimizer state are split over the ranks, and so
             are the frozen KL anchor and precedent policy (their scoring passes are collective, with
             the number of forwards equalised over ranks) and the step's pi_t snapshot (copied shard
             to shard, no communication). After each step's updates the shards are all-gathered once
             into the full model every rank keeps for rollouts, pi_k scoring and checkpoints (as a vLLM
             engine holds full weights anyway), so generation never runs over sharded weights.
             Checkpoints hold gathered states, the optimizer's numbered like a single process's, so
             a checkpoint resumes under either strategy and any process count.

Deliberately omitted: tensor/pipeline parallelism, and multi-node rendezvous beyond what torchrun provides.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig

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
    local_den = agg_denominator(mb.loss_mask(exclude_truncated=exclude_truncated), aggregation)
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


def agg_denominator(mask: torch.Tensor, mode: str) -> float:
    """The denominator `losses.agg_loss` divides by, before clamping: the quantity ranks must add up."""
    mask = mask.bool()
    if mode == "token-mean":
        return float(mask.sum())
    if mode == "seq-mean-token-mean":
        return float((mask.sum(dim=-1) > 0).sum())
    if mode == "seq-mean-token-sum":
        return float(mask.shape[0])
    raise ValueError(f"unknown loss aggregation '{mode}'")


class CausalLMDDP(DistributedDataParallel):
    """DDP whose forward names `logits_to_keep`, so log-prob passes still skip the prompt's logits."""

    def forward(  # type: ignore[override]
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> Any:
        extra = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **extra,
        )


def wrap_for_training(
    module: torch.nn.Module, ctx: DistContext, *, causal_lm: bool, strategy: str = "ddp"
) -> torch.nn.Module:
    """The module the learner differentiates through: DDP or a sharded FSDP copy across ranks, the module
    itself in a single process."""
    if not ctx.enabled:
        return module
    if strategy == "fsdp":
        return shard_copy(module)
    wrapper = CausalLMDDP if causal_lm else DistributedDataParallel
    # device_ids=None: inputs are already on this process's device (and the critic takes a
    # RolloutBatch, which DDP need not move). Buffers (rotary tables) are the same on every
    # rank, so they are synced once at construction and not before every forward.
    return wrapper(module, device_ids=None, forward_sync_buffers=False)


# ------------------------------------------------------------------------------------------------ FSDP


def shard_copy(module: torch.nn.Module, *, frozen: bool = False) -> torch.nn.Module:
    """An FSDP2 copy of `module`: each transformer block (the model's `_no_split_modules`) is its own
    shard group, the rest (embeddings, final norm, heads) the root's. Parameter names are unchanged.
    A `frozen` copy is in eval mode without gradients (a KL anchor) and reshards its root after each
    forward too, since no backward follows to do it."""
    sharded = copy.deepcopy(module)
    if frozen:
        sharded.eval().requires_grad_(False)
    # The mesh is over the module's own device type: a CPU job on a machine that has GPUs stays on gloo.
    device_type = next(sharded.parameters()).device.type
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    block_classes = {name for sub in sharded.modules() for name in (getattr(sub, "_no_split_modules", None) or [])}
    for sub in list(sharded.modules()):
        if sub is not sharded and type(sub).__name__ in block_classes:
            fully_shard(sub, mesh=mesh)
    _shard_odd_dtypes(sharded, mesh)
    fully_shard(sharded, mesh=mesh, reshard_after_forward=True if frozen else None)
    return sharded


def _shard_odd_dtypes(root: torch.nn.Module, mesh: Any) -> None:
    """FSDP2 needs one parameter dtype per shard group: a module outside the blocks whose parameters have
    another dtype than the rest of the root's (the critic's float32 value head on a bfloat16 backbone)
    becomes a group of its own."""
    in_groups = {id(p) for sub in root.modules() if isinstance(sub, FSDPModule) for p in sub.parameters()}
    rest = [(sub, p) for sub in root.modules() for p in sub.parameters(recurse=False) if id(p) not in in_groups]
    sizes: dict[torch.dtype, int] = {}
    for _sub, param in rest:
        sizes[param.dtype] = sizes.get(param.dtype, 0) + param.numel()
    if len(sizes) < 2:
        return
    common = max(sizes, key=lambda dtype: sizes[dtype])
    odd = {id(sub): sub for sub, param in rest if param.dtype != common and sub is not root}
    for sub in odd.values():
        fully_shard(sub, mesh=mesh)


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def _resharded(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with every FSDP group's parameters back in their sharded form: the root keeps its
    parameters gathered after a forward, which `named_parameters` would then list unsharded."""
    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()
    return module


@torch.no_grad()
def gather_into(sharded: torch.nn.Module, full: torch.nn.Module) -> None:
    """Copy the sharded module's trained parameters into the full replica (collective: every rank calls it)."""
    targets = dict(full.named_parameters())
    for name, param in _resharded(sharded).named_parameters():
        if param.requires_grad:
            targets[name].copy_(param.full_tensor())


def whole_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()`; for a sharded module the gathered one on CPU, on rank 0 ({} elsewhere;
    collective: every rank calls it)."""
    if not is_sharded(module):
        return module.state_dict()
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_whole_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `whole_state_dict`: every rank passes the same whole state dict."""
    if is_sharded(module):
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        module.load_state_dict(state)


def parameter_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters; of a sharded module, of this rank's shards (no communication)."""
    return {name: param.detach().clone() for name, param in _resharded(module).named_parameters()}


@torch.no_grad()
def load_parameter_snapshot(module: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Copy a `parameter_snapshot` of a module sharded the same way into `module`'s shards."""
    for name, param in _resharded(module).named_parameters():
        param.copy_(snapshot[name])


def _trained_names(module: torch.nn.Module) -> list[str]:
    """Names of the trained parameters in the order a single process's optimizer numbers them."""
    return [name for name, param in module.named_parameters() if param.requires_grad]


def whole_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()`; for the optimizer of a sharded module the whole state on CPU, numbered
    like a single process's, on rank 0 ({} elsewhere; collective: every rank calls it)."""
    if not is_sharded(module):
        return optimizer.state_dict()
    by_name = get_optimizer_state_dict(
        module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_trained_names(module))}
    return {
        "state": {index[name]: value for name, value in by_name["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]
        ],
    }


def load_whole_optimizer_state(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Inverse of `whole_optimizer_state`: every rank passes the same whole state."""
    if not is_sharded(module):
        optimizer.load_state_dict(state)
        return
    names = _trained_names(module)
    by_name = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]],
    }
    set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------------ processes


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


def torchrun_argv(
    nproc_per_node: int, module: str, module_args: list[str], *, master_port: int | None = None
) -> list[str]:
    """argv that runs `python -m module module_args...` in `nproc_per_node` local processes under torchrun.

    torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE (what `init_from_env` reads) and stops
    all of them when one fails (no restarts). `master_port` pins the rendezvous port; without it
    `--standalone` picks a free one, so several jobs can share a host.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    rendezvous = ["--standalone"]
    if master_port is not None:
        rendezvous = ["--master_addr=127.0.0.1", f"--master_port={master_port}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", *rendezvous]
    return [*launcher, f"--nproc_per_node={nproc_per_node}", "-m", module, *module_args]


def torchrun_command(
    config_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    nproc_per_node: int,
    *,
    resume: bool = True,
    device: str = "cuda",
    master_port: int | None = None,
) -> list[str]:
    """argv that trains one job file with the CLI on `nproc_per_node` local processes (one per GPU).

    Run it as a subprocess (cwd anywhere, same Python environment) and read the job's
    metrics.jsonl / events.jsonl / checkpoints from output_dir. A single process is just
    `python -m remix_engine.cli train ...`. (The Celery worker launches database-backed jobs with
    `worker.distributed_entry` instead; see docs/scaling.md.)
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    train = ["train", str(config_path), "--output", str(output_dir), "--device", device]
    if resume:
        train.append("--resume")
    if nproc_per_node == 1:
        return [sys.executable, "-m", "remix_engine.cli", *train]
    return torchrun_argv(nproc_per_node, "remix_engine.cli", train, master_port=master_port)
