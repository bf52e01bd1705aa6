"""The learner's module across processes: DDP wrapping, FSDP2 shard copies, and whole (gathered) states.

Checkpoints hold gathered states, the optimizer's numbered like a single process's, so a checkpoint
resumes under either strategy and any process count.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

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

from remix_engine.distributed.context import DistContext

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor


class CausalLMDDP(DistributedDataParallel):
    """DDP whose forward names `logits_to_keep`, so log-prob passes still skip the prompt's logits."""

    def forward(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> Any:
        extra = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
        return super().forward(  # type: ignore[no-untyped-call]  # DDP's forward(*inputs, **kwargs) is unannotated
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
            targets[name].copy_(cast("DTensor", param).full_tensor())  # FSDP2 shards parameters as DTensors


def whole_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()`; for a sharded module the gathered one on CPU, on rank 0 ({} elsewhere;
    collective: every rank calls it)."""
    if not is_sharded(module):
        return module.state_dict()
    # A model's state dict holds tensors only; the declared type covers optimizer states too.
    whole = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return cast(dict[str, torch.Tensor], whole)


def load_whole_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `whole_state_dict`: every rank passes the same whole state dict."""
    if is_sharded(module):
        whole = cast(dict[str, Any], state)  # dict is invariant: a dict of tensors is not a dict of its ValueType
        set_model_state_dict(module, whole, options=StateDictOptions(full_state_dict=True, strict=False))
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
    by_name: dict[str, Any] = get_optimizer_state_dict(
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
    by_name: dict[str, Any] = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]],
    }
    set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------------ processes
