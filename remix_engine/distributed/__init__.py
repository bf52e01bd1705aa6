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

Several nodes: the ranks of `num_nodes` torchrun launchers meet at a c10d rendezvous (`Rendezvous`)
and are numbered over all nodes; nothing above changes (the worker side is worker/distributed_launch.py).

Deliberately omitted: tensor/pipeline parallelism, and elastic membership (a lost node ends the
attempt; the job resumes from its last checkpoint).

Modules: context (ranks and collectives), rows (this rank's rows of a batch and its loss weight),
models (DDP/FSDP wrapping and whole states), launch (torchrun command lines).
"""

from remix_engine.distributed.context import DistContext, init_from_env, shutdown
from remix_engine.distributed.launch import Rendezvous, torchrun_argv, torchrun_command
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
from remix_engine.distributed.rows import RowMap, check_shardable, local_minibatch

__all__ = [
    "DistContext",
    "Rendezvous",
    "RowMap",
    "check_shardable",
    "gather_into",
    "init_from_env",
    "is_sharded",
    "load_parameter_snapshot",
    "load_whole_optimizer_state",
    "load_whole_state",
    "local_minibatch",
    "parameter_snapshot",
    "shard_copy",
    "shutdown",
    "torchrun_argv",
    "torchrun_command",
    "whole_optimizer_state",
    "whole_state_dict",
    "wrap_for_training",
]
