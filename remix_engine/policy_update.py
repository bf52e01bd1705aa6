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
from remix_engine.micro_batches import length_buckets, loss_share
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
            logp, entropy, grad_norm, one_pass = _accumulate_and_step(
                learner, mb, share, plan, alg, temperature, exclude_truncated, fill_pi_k=fill_pi_k
            )
            if fill_pi_k:
                assert batch.old_logp is not None and batch.behavior_logp is not None
                assert mb.old_logp is not None and mb.behavior_logp is not None
                fill_pi_k = False
                batch.old_logp[global_rows] = mb.old_logp
                batch.behavior_logp[global_rows] = mb.behavior_logp
            if one_pass is None:  # the minibatch's loss and metrics, as one pass over all its rows has them
                with torch.no_grad():
                    one_pass = _objective(logp, entropy, mb, mask, plan, alg)
            loss, term_metrics = one_pass
            # This process's part of the minibatch loss; the parts add up over processes.
            record({"loss": float(loss) * share / dist.world_size})
            reports = share > 0 or not dist.enabled  # a placeholder minibatch has nothing to report
            if reports:
                record({**term_metrics, "grad_norm": grad_norm})
                record(replay_ratio_stats(logp, mb))
            if learner.critic is not None:
                critic_metrics = _critic_step(learner, mb, share, alg, exclude_truncated)
                if reports:
                    record(critic_metrics)
    return dist.combine_metrics({key: sums[key] / counts[key] for key in sums}, summed=("loss",))


def _accumulate_and_step(
    learner: PolicyLearner,
    mb: RolloutBatch,
    share: float,
    plan: UpdatePlan,
    alg: AlgorithmConfig,
    temperature: float,
    exclude_truncated: bool,
    *,
    fill_pi_k: bool,
) -> tuple[torch.Tensor, torch.Tensor, float, tuple[torch.Tensor, dict[str, float]] | None]:
    """One optimizer step on the minibatch `mb`, its gradient accumulated over length-bucketed micro-batches.

    Returns the detached log-probs and entropies (B, Lr) of every row, in `mb`'s order, the gradient
    norm, and with a single pass its (detached) loss and metrics. Each micro-batch's loss is weighted by
    its `loss_share` of the minibatch (times this process's `share`), so the accumulated gradient is the
    one of the minibatch's loss. With `fill_pi_k` the forwards, all taken before the optimizer step,
    fill in mb's pi_k and fresh behaviour log-probs. A distributed job keeps one pass per minibatch:
    each of its backward passes is collective, and ranks would disagree on how many they take.
    """
    mask = mb.loss_mask(exclude_truncated=exclude_truncated)
    max_tokens = None if learner.dist.enabled else alg.micro_batch_tokens
    parts = length_buckets(mb, max_rows=max(len(mb), 1), max_tokens=max_tokens)
    logp_all = torch.zeros(mb.response_ids.shape, device=mb.response_ids.device)
    entropy_all = torch.zeros_like(logp_all)
    learner.zero_policy_grad()
    one_pass = None
    for rows in parts:
        part = mb if len(parts) == 1 else mb.select(rows)
        logp, entropy = sequence_logprobs(learner.train_policy, part, temperature=temperature)
        assert entropy is not None  # sequence_logprobs returns the entropy by default
        if fill_pi_k:
            # The step's batch holds placeholders for both log-probs here and flags its replayed rows.
            assert part.is_replay is not None and part.behavior_logp is not None and mb.behavior_logp is not None
            assert mb.old_logp is not None
            part.old_logp = logp.detach()
            part.behavior_logp = torch.where(part.is_replay[:, None], part.behavior_logp, part.old_logp)
            if part is not mb:
                mb.old_logp[rows] = part.old_logp
                mb.behavior_logp[rows] = part.behavior_logp
        part_mask = part.loss_mask(exclude_truncated=exclude_truncated)
        loss, metrics = _objective(logp, entropy, part, part_mask, plan, alg)
        if len(parts) == 1:
            one_pass = (loss.detach(), metrics)
        weight = share * (1.0 if len(parts) == 1 else loss_share(part_mask, mask, alg.loss_aggregation))
        (loss if weight == 1.0 else loss * weight).backward()
        logp_all[rows] = logp.detach()
        entropy_all[rows] = entropy.detach()
    return logp_all, entropy_all, learner.apply_policy_grad(), one_pass


def _objective(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    mb: RolloutBatch,
    mask: torch.Tensor,
    plan: UpdatePlan,
    alg: AlgorithmConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """policy loss + entropy bonus + KL-Convex of `mb`'s rows, with the terms' metrics."""
    # The trainer fills these before the update (or the first forward does, under fill_pi_k).
    assert mb.old_logp is not None and mb.behavior_logp is not None and mb.advantages is not None
    agg = alg.loss_aggregation
    loss_fn = POLICY_LOSSES.get(alg.policy_loss)
    pg, pg_m = loss_fn(logp, mb.old_logp, mb.behavior_logp, mb.advantages, mask, clip_eps=alg.clip_eps, agg=agg)
    ent, ent_m = entropy_bonus(entropy, mask, coef=alg.entropy_coef, agg=agg)
    kl, kl_m = kl_convex_loss(
        logp, mb.ref_logp, mb.prev_logp, mask, lam=plan.lam, coef=alg.kl_coef, kind=alg.kl_estimator, agg=agg
    )
    return pg + ent + kl, {**pg_m, **ent_m, **kl_m}


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
    """One critic step on `mb`, accumulated over the same length-bucketed micro-batches as the policy's."""
    assert learner.train_critic is not None, "only PPO has a critic"
    assert mb.values is not None and mb.returns is not None  # the step's batch carries them under GAE
    mask = mb.loss_mask(exclude_truncated=exclude_truncated)
    max_tokens = None if learner.dist.enabled else alg.micro_batch_tokens
    parts = length_buckets(mb, max_rows=max(len(mb), 1), max_tokens=max_tokens)
    values_all = torch.zeros(mb.response_ids.shape, device=mb.response_ids.device)
    learner.zero_critic_grad()
    metrics: dict[str, float] = {}
    for rows in parts:
        part = mb if len(parts) == 1 else mb.select(rows)
        assert part.values is not None and part.returns is not None
        values = learner.train_critic(part)
        part_mask = part.loss_mask(exclude_truncated=exclude_truncated)
        loss, metrics = value_loss(
            values, part.values, part.returns, part_mask, clip=alg.value_clip, agg=alg.loss_aggregation
        )
        weight = share * (1.0 if len(parts) == 1 else loss_share(part_mask, mask, alg.loss_aggregation))
        (alg.value_coef * loss * weight).backward()
        values_all[rows] = values.detach()
    learner.apply_critic_grad()
    if len(parts) > 1:  # the minibatch's metrics, as one pass over all its rows has them
        _, metrics = value_loss(values_all, mb.values, mb.returns, mask, clip=alg.value_clip, agg=alg.loss_aggregation)
    return metrics
