"""The learner's optimisation of one step: epochs of minibatches over the mixed batch, one loss per minibatch.

Per minibatch the total loss is

    policy_loss - c * entropy + beta * [lambda KL(pi || anchor) + (1 - lambda) KL(pi || pi_{t-1})]

(`entropy_bonus` returns the already-negated entropy term), followed for PPO by one critic step on
the same rows. The policy loss is the registry entry `algorithm.policy_loss`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import AlgorithmConfig
from remix_engine.distributed.context import DistContext
from remix_engine.distributed.rows import RowMap, local_minibatch
from remix_engine.learner import PolicyLearner
from remix_engine.losses import POLICY_LOSSES, entropy_bonus, kl_convex_loss, value_loss
from remix_engine.modeling import sequence_logprobs
from remix_engine.step_metrics import replay_ratio_stats


@dataclass(frozen=True)
class UpdatePlan:
    """How one step's batch is optimised.

    epochs:    passes over the batch (UTD m times ppo_epochs in the Mix phase, ppo_epochs after).
    lam:       lambda(t) of the KL-Convex term.
    rows:      where this process's rows sit in the step's global batch (None: one process).
    fill_pi_k: the first minibatch is the whole batch and its forward, before any optimizer step,
               provides pi_k's log-probs (old_logp) of every row and the fresh rows' behaviour
               log-probs, instead of separate no-grad passes (see `fills_pi_k_in_first_forward`).
    """

    epochs: int
    lam: float
    rows: RowMap | None = None
    fill_pi_k: bool = False


def fills_pi_k_in_first_forward(alg: AlgorithmConfig, dist: DistContext, batch_rows: int) -> bool:
    """Whether one minibatch holds the whole batch on one process, so its first forward scores pi_k."""
    return alg.minibatch_size >= batch_rows and not dist.enabled


def update_policy(
    learner: PolicyLearner,
    batch: RolloutBatch,
    plan: UpdatePlan,
    *,
    alg: AlgorithmConfig,
    temperature: float,
    exclude_truncated: bool,
    generator: torch.Generator,
) -> dict[str, float]:
    """Optimiser steps over minibatches of `batch`; the metrics averaged over them (and processes)."""
    dist = learner.dist
    loss_fn = POLICY_LOSSES.get(alg.policy_loss)
    fill_pi_k = plan.fill_pi_k
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def record(values: dict[str, float]) -> None:
        for key, value in values.items():
            sums[key] += float(value)
            counts[key] += 1

    total = len(batch) if plan.rows is None else plan.rows.total
    for _ in range(plan.epochs):
        order = torch.randperm(total, generator=generator)
        for global_rows in order.split(alg.minibatch_size):
            mb, share = _minibatch(batch, global_rows, plan.rows, dist, alg, exclude_truncated)
            mask = mb.loss_mask(exclude_truncated=exclude_truncated)
            logp, entropy = sequence_logprobs(learner.train_policy, mb, temperature=temperature)
            if fill_pi_k:
                # The step's batch holds placeholders for both log-probs here and flags its replayed rows.
                assert mb.is_replay is not None and mb.behavior_logp is not None
                assert batch.old_logp is not None and batch.behavior_logp is not None
                fill_pi_k = False
                mb.old_logp = logp.detach()
                mb.behavior_logp = torch.where(mb.is_replay[:, None], mb.behavior_logp, mb.old_logp)
                batch.old_logp[global_rows] = mb.old_logp
                batch.behavior_logp[global_rows] = mb.behavior_logp
            # The trainer fills these before the update; sequence_logprobs returns the entropy by default.
            assert mb.old_logp is not None and mb.behavior_logp is not None and mb.advantages is not None
            assert entropy is not None
            agg = alg.loss_aggregation
            pg, pg_m = loss_fn(logp, mb.old_logp, mb.behavior_logp, mb.advantages, mask, clip_eps=alg.clip_eps, agg=agg)
            ent, ent_m = entropy_bonus(entropy, mask, coef=alg.entropy_coef, agg=agg)
            kl, kl_m = kl_convex_loss(
                logp, mb.ref_logp, mb.prev_logp, mask, lam=plan.lam, coef=alg.kl_coef, kind=alg.kl_estimator, agg=agg
            )
            loss = pg + ent + kl
            grad_norm = learner.step_policy(loss if share == 1.0 else loss * share)
            # This process's part of the minibatch loss; the parts add up over processes.
            record({"loss": float(loss.detach()) * share / dist.world_size})
            reports = share > 0 or not dist.enabled  # a placeholder minibatch has nothing to report
            if reports:
                record({**pg_m, **ent_m, **kl_m, "grad_norm": grad_norm})
                record(replay_ratio_stats(logp.detach(), mb))
            if learner.critic is not None:
                critic_metrics = _critic_step(learner, mb, share, alg, exclude_truncated)
                if reports:
                    record(critic_metrics)
    return dist.combine_metrics({key: sums[key] / counts[key] for key in sums}, summed=("loss",))


def _minibatch(
    batch: RolloutBatch,
    global_rows: torch.Tensor,
    rows: RowMap | None,
    dist: DistContext,
    alg: AlgorithmConfig,
    exclude_truncated: bool,
) -> tuple[RolloutBatch, float]:
    """This process's rows of a minibatch and the weight of its loss (1 for a single process)."""
    if rows is None or not dist.enabled:
        return batch.select(global_rows), 1.0
    return local_minibatch(
        batch, rows.local_rows(global_rows), dist, alg.loss_aggregation, exclude_truncated=exclude_truncated
    )


def _critic_step(
    learner: PolicyLearner, mb: RolloutBatch, share: float, alg: AlgorithmConfig, exclude_truncated: bool
) -> dict[str, float]:
    assert learner.train_critic is not None, "only PPO has a critic"
    assert mb.values is not None and mb.returns is not None  # the step's batch carries them under GAE
    values = learner.train_critic(mb)
    loss, metrics = value_loss(
        values,
        mb.values,
        mb.returns,
        mb.loss_mask(exclude_truncated=exclude_truncated),
        clip=alg.value_clip,
        agg=alg.loss_aggregation,
    )
    learner.step_critic(alg.value_coef * loss * share)
    return metrics
