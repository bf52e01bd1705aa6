"""The trained policy, its optimizers and its frozen copies, the same to the trainer on one process or many.

`PolicyLearner` owns what a ReMix step differentiates and what it compares against:
  policy       the full model every process keeps (rollouts, pi_k scoring, checkpoints);
  train_policy what the optimizer steps: the policy itself, a DDP wrapper, or an FSDP shard copy
               whose shards are gathered back into `policy` after each step's updates;
  ref_model    the KL anchor: the base model until reincarnation, then the policy of that step;
  prev_model   the precedent policy pi_{t-1};
  critic       PPO's value model (with its own optimizer), None for GRPO.
With LoRA only the adapters train and the copies are adapter snapshots swapped into the live model.
The trainer asks for snapshots, loads them into copies, steps and gathers; it never branches on the
strategy (single process, DDP, FSDP, LoRA). Collective methods must be called by every process.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig
from remix_engine.critic import ValueModel
from remix_engine.distributed.context import DistContext
from remix_engine.distributed.models import (
    gather_into,
    is_sharded,
    load_parameter_snapshot,
    load_whole_optimizer_state,
    load_whole_state,
    parameter_snapshot,
    shard_copy,
    whole_optimizer_state,
    whole_state_dict,
    wrap_for_training,
)
from remix_engine.distributed.rows import check_shardable
from remix_engine.lora import ADAPTER_DIR, AdapterSnapshot, LoraPolicy, MergedExport
from remix_engine.micro_batches import length_buckets
from remix_engine.modeling import sequence_logprobs

PolicyState = dict[str, torch.Tensor]


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class PolicyLearner:
    """The policy being trained, its optimizer, its KL anchor and precedent copies, and PPO's critic."""

    def __init__(self, config: TrainConfig, policy: torch.nn.Module, dist: DistContext, device: torch.device) -> None:
        self.cfg = config
        self.dist = dist
        self.policy = policy
        # With LoRA the policy object gains adapters in place and only they are trained.
        self.lora = LoraPolicy(policy, config.lora) if config.lora.enabled else None
        # FSDP: the learner and the frozen policy copies are sharded over the processes.
        self.fsdp = dist.enabled and config.distributed.strategy == "fsdp"
        self.ref_model = self._policy_copy(base=True)  # KL anchor: the base model until reincarnation
        # Counts the anchor's moves: log-probs under the anchor stay valid while it is unchanged.
        self.anchor_version = 0
        self.prev_model = self._policy_copy(base=False)  # precedent policy pi_{t-1}
        self.critic = ValueModel(policy).to(device) if config.algorithm.advantage_estimator == "gae" else None
        check_shardable(config, dist.world_size)
        strategy = config.distributed.strategy
        self.train_policy = wrap_for_training(policy, dist, causal_lm=True, strategy=strategy)
        self.optimizer = self._optimizer(self.train_policy, config.optim.lr)
        self.train_critic: torch.nn.Module | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if self.critic is not None:
            self.train_critic = wrap_for_training(self.critic, dist, causal_lm=False, strategy=strategy)
            self.critic_optimizer = self._optimizer(self.train_critic, config.optim.critic_lr)

    def _optimizer(self, module: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.AdamW(_trainable(module), lr=lr, betas=o.betas, weight_decay=o.weight_decay)

    def _policy_copy(self, *, base: bool) -> torch.nn.Module:
        if self.lora is not None:
            return AdapterSnapshot(self.lora, None if base else self.lora.adapter_state())
        return shard_copy(self.policy, frozen=True) if self.fsdp else _frozen_copy(self.policy)

    # ------------------------------------------------------------------ policy copies
    def rollout_weights(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The policy's weights under the base model's names (merged with LoRA), for a rollout engine."""
        if self.lora is not None:
            return self.lora.merged_state_dict().items()
        return self.policy.state_dict().items()

    def snapshot(self) -> PolicyState:
        """A copy of the trained weights: the whole model, only the adapters with LoRA, or this
        process's shards under FSDP (for loading into a policy copy)."""
        if self.lora is not None:
            return self.lora.adapter_state()
        if self.fsdp:
            return parameter_snapshot(self.train_policy)
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    def _load_into(self, policy_copy: torch.nn.Module, state: PolicyState) -> None:
        if self.fsdp:
            load_parameter_snapshot(policy_copy, state)
        else:
            policy_copy.load_state_dict(state)

    def hold_as_previous(self, state: PolicyState) -> None:
        """The precedent copy becomes the policy of `state` (pi_t, taken before this step's updates)."""
        self._load_into(self.prev_model, state)

    def anchor_to_current(self, *, reset_optimizer: bool) -> None:
        """Reincarnation: the KL anchor becomes the current policy, optionally with a fresh Adam state."""
        self._load_into(self.ref_model, self.snapshot())
        self.anchor_version += 1
        if reset_optimizer:
            self.optimizer = self._optimizer(self.train_policy, self.cfg.optim.lr)

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """Response log-probs (B, Lr) of `batch` under `model` (no gradient), in passes of at most
        minibatch_size rows, length-bucketed under algorithm.micro_batch_tokens when it is set."""
        alg = self.cfg.algorithm
        temperature = self.cfg.rollout.temperature
        logp = torch.zeros(batch.response_ids.shape, device=batch.response_ids.device)
        row_chunks = length_buckets(batch, max_rows=alg.minibatch_size, max_tokens=alg.micro_batch_tokens)
        for rows in row_chunks:
            part, _ = sequence_logprobs(model, batch.select(rows), temperature=temperature, with_entropy=False)
            logp[rows.to(logp.device)] = part
        if is_sharded(model):  # every forward of a sharded model is collective: match the busiest rank
            for _ in range(self.dist.all_max(len(row_chunks)) - len(row_chunks)):
                sequence_logprobs(model, batch.select([0]), temperature=temperature, with_entropy=False)
        return logp

    def zero_policy_grad(self) -> None:
        """Start a gradient accumulation for one optimizer step (add to it with `loss.backward()`)."""
        self.optimizer.zero_grad(set_to_none=True)

    def apply_policy_grad(self) -> float:
        """The optimizer step on the accumulated gradient; returns its norm before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.train_policy.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        return float(grad_norm)

    def zero_critic_grad(self) -> None:
        """Start a gradient accumulation for one critic step (add to it with `loss.backward()`)."""
        assert self.critic_optimizer is not None, "GRPO has no critic"
        self.critic_optimizer.zero_grad(set_to_none=True)

    def apply_critic_grad(self) -> None:
        """The critic's optimizer step on its accumulated gradient."""
        assert self.train_critic is not None and self.critic_optimizer is not None, "GRPO has no critic"
        torch.nn.utils.clip_grad_norm_(self.train_critic.parameters(), self.cfg.optim.grad_clip)
        self.critic_optimizer.step()

    def gather_shards(self) -> None:
        """FSDP: the updated shards into the full models every process keeps (no-op otherwise)."""
        if is_sharded(self.train_policy):
            gather_into(self.train_policy, self.policy)
        if self.train_critic is not None and self.critic is not None and is_sharded(self.train_critic):
            gather_into(self.train_critic, self.critic)

    # ------------------------------------------------------------------ checkpoints
    def export(self) -> Any:
        """What a checkpoint folder saves with `save_pretrained`: the policy, or with LoRA the merged
        weights plus `adapter/`."""
        return self.policy if self.lora is None else MergedExport(self.lora)

    def state_dict(self, *, anchor_moved: bool) -> dict[str, Any]:
        """Optimizer states, the critic and the policy copies (collective: every process calls it).

        The anchor is saved only once reincarnation moved it off the base model, which a resumed job
        loads anyway."""
        critic_optimizer_state = None
        if self.train_critic is not None and self.critic_optimizer is not None:
            critic_optimizer_state = whole_optimizer_state(self.train_critic, self.critic_optimizer)
        return {
            "optimizer": whole_optimizer_state(self.train_policy, self.optimizer),
            "critic": None if self.critic is None else self.critic.state_dict(),
            "critic_optimizer": critic_optimizer_state,
            "ref_model": whole_state_dict(self.ref_model) if anchor_moved else None,
            "prev_model": whole_state_dict(self.prev_model),
            "anchor_version": self.anchor_version,
        }

    def load_state_dict(self, state: dict[str, Any], checkpoint_dir: Path) -> None:
        """Inverse of `state_dict`, with the policy's weights read from the checkpoint folder."""
        if self.lora is not None:
            self.lora.load_adapter_dir(checkpoint_dir / ADAPTER_DIR)
        else:
            saved = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=self.policy.dtype)
            self.policy.load_state_dict(saved.state_dict())
        load_whole_state(self.prev_model, state["prev_model"])
        if state["ref_model"] is not None:
            load_whole_state(self.ref_model, state["ref_model"])
        # A checkpoint saved before the version existed: the anchor moves once, at reincarnation.
        self.anchor_version = int(state.get("anchor_version", 0 if state["ref_model"] is None else 1))
        _load_learner_state(self.train_policy, self.policy, self.optimizer, state["optimizer"])
        if self.critic is not None and state["critic"] is not None:
            assert self.train_critic is not None and self.critic_optimizer is not None
            self.critic.load_state_dict(state["critic"])
            _load_learner_state(self.train_critic, self.critic, self.critic_optimizer, state["critic_optimizer"])


def _load_learner_state(
    trained: torch.nn.Module, full: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Optimizer state, and under FSDP the restored full weights into the sharded copy too."""
    if is_sharded(trained):
        load_whole_state(trained, full.state_dict())
    load_whole_optimizer_state(trained, optimizer, state)
