"""The batch one ReMix step learns from: scored fresh rows with advantages, then replayed rows, with the
log-probs and values its loss compares against.

  advantaged_fresh  behaviour log-probs of the fresh rows are the learner's own (so ratios start at 1),
                    PPO's values and GAE returns, then advantages on the whole step's batch.
  mixed_batch       fresh rows + replayed rows, with old_logp (pi_k, this step's starting policy), the
                    current critic's values for replayed rows (PPO), and the log-probs under the KL
                    anchor and the precedent policy for the KL terms that need them. Replayed rows
                    bring the anchor log-probs the replay buffer kept under the same anchor; only
                    the others are scored.
"""

from __future__ import annotations

import torch

from remix_engine.advantages import ADVANTAGES, gae_returns
from remix_engine.batch import RolloutBatch
from remix_engine.config import AlgorithmConfig
from remix_engine.learner import PolicyLearner


def _unset(like: torch.Tensor) -> torch.Tensor:
    """Log-probs the learner's first forward fills in: NaN until then, so a missed fill cannot go unnoticed."""
    return torch.full(like.shape, float("nan"), device=like.device)


@torch.no_grad()
def advantaged_fresh(
    learner: PolicyLearner,
    fresh: RolloutBatch,
    alg: AlgorithmConfig,
    group_size: int,
    pad_token_id: int,
    *,
    behaviour_pass: bool,
) -> tuple[RolloutBatch, dict[str, float]]:
    """This process's scored fresh rows get behaviour log-probs, values, returns and advantages.

    Returns the whole step's fresh batch (`fresh` itself, or every process's shard gathered, on which
    advantages are computed so whitening and metrics see the whole batch) and the estimator's metrics.
    Without `behaviour_pass` the behaviour log-probs are left to the learner's first forward.
    """
    dist = learner.dist
    if behaviour_pass:
        fresh.behavior_logp = learner.logprobs(learner.policy, fresh)
    if learner.critic is not None:
        assert fresh.rewards is not None  # the rewards score every fresh row before this step's batch is built
        fresh.values = learner.critic(fresh).detach()
        _, fresh.returns = gae_returns(fresh.rewards, fresh.values, fresh.response_mask, alg.gae_gamma, alg.gae_lambda)
    scored = dist.gather_batch(fresh, pad_token_id)
    scored.advantages, metrics = ADVANTAGES.get(alg.advantage_estimator)(scored, cfg=alg)
    if scored is not fresh:  # take back this process's rows
        first = dist.shard_range(len(scored) // group_size)[0] * group_size
        fresh.advantages = scored.advantages[first : first + len(fresh), : fresh.response_ids.shape[1]].contiguous()
    return scored, metrics


@torch.no_grad()
def mixed_batch(
    learner: PolicyLearner,
    fresh: RolloutBatch,
    replay: RolloutBatch | None,
    alg: AlgorithmConfig,
    lam: float,
    pad_token_id: int,
    *,
    fill_pi_k: bool,
) -> RolloutBatch:
    """Fresh rows then replayed rows, with every log-prob and value the step's losses read.

    old_logp of fresh rows is their behaviour log-prob, computed by the same model just before; only
    replayed rows need a pass. With `fill_pi_k` the learner's first forward fills both in. Anchor and
    precedent log-probs are computed only for KL terms with a non-zero weight unless `log_inactive_kl`
    asks for them all. PPO: replayed rows' values come from the current critic, so their value clip is
    centred on this step's critic as for fresh rows. `replay.ref_logp`, where set, holds the anchor
    log-probs the buffer kept (NaN rows: not known under the current anchor).
    """
    if fill_pi_k:
        fresh.behavior_logp = _unset(fresh.response_ids)
    fresh.old_logp = fresh.behavior_logp
    parts = [fresh]
    kept_ref = None
    if replay is not None:
        kept_ref, replay.ref_logp = replay.ref_logp, None  # joined below, after the fresh rows get theirs
        replay.old_logp = _unset(replay.response_ids) if fill_pi_k else learner.logprobs(learner.policy, replay)
        if learner.critic is not None:
            replay.values = learner.critic(replay)
        parts.append(replay)
    batch = RolloutBatch.concat(parts, pad_token_id)
    log_all = alg.log_inactive_kl
    ref_active, prev_active = lam * alg.kl_coef != 0, (1 - lam) * alg.kl_coef != 0
    batch.ref_logp = _anchor_logprobs(learner, batch, kept_ref, len(fresh)) if log_all or ref_active else None
    batch.prev_logp = learner.logprobs(learner.prev_model, batch) if log_all or prev_active else None
    return batch


def _anchor_logprobs(
    learner: PolicyLearner, batch: RolloutBatch, kept: torch.Tensor | None, first_replayed: int
) -> torch.Tensor:
    """(B, Lr) anchor log-probs of `batch`: `kept` (R, Lr_replay) for the replayed rows from
    `first_replayed` on where it holds them, a pass over the other rows for the rest."""
    if kept is None:
        return learner.logprobs(learner.ref_model, batch)
    known = torch.zeros(len(batch), dtype=torch.bool)
    known[first_replayed:] = ~torch.isnan(kept).any(dim=1).cpu()
    ref = torch.zeros(batch.response_ids.shape, device=batch.response_ids.device)
    missing = torch.nonzero(~known).flatten()
    if len(missing):
        ref[missing] = learner.logprobs(learner.ref_model, batch.select(missing))
    rows = torch.nonzero(known).flatten()
    # Responses are right-padded: the replayed rows' kept columns are the batch's first ones.
    ref[rows, : kept.shape[1]] = kept[rows - first_replayed].to(ref.device)
    return ref
