"""Length-bucketed micro-batches: the buckets, the loss shares, and that a bucketed learner update has the
gradients, metrics and filled-in pi_k log-probs of one pass over the whole minibatch."""

from __future__ import annotations

import pytest
import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig
from remix_engine.distributed.context import DistContext
from remix_engine.learner import PolicyLearner
from remix_engine.losses import AGG_MODES, agg_loss
from remix_engine.micro_batches import length_buckets, loss_share
from remix_engine.modeling import load_policy, sequence_logprobs
from remix_engine.policy_update import UpdatePlan, update_policy

PROMPT_LENGTHS = [3, 12, 5, 8, 2, 10, 4, 6]
RESPONSE_LENGTHS = [1, 45, 3, 30, 2, 12, 40, 5]  # very different, so buckets cut much padding
BUDGET = 120  # padded tokens per pass: several micro-batches for these rows


def varied_batch(seed: int = 0, vocab: int = 100) -> RolloutBatch:
    """Left-padded prompts and right-padded responses of the lengths above, random tokens, some truncated."""
    gen = torch.Generator().manual_seed(seed)
    rows, lp, lr = len(PROMPT_LENGTHS), max(PROMPT_LENGTHS), max(RESPONSE_LENGTHS)
    prompt_ids = torch.zeros((rows, lp), dtype=torch.long)
    prompt_mask = torch.zeros((rows, lp), dtype=torch.bool)
    response_ids = torch.zeros((rows, lr), dtype=torch.long)
    response_mask = torch.zeros((rows, lr), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(PROMPT_LENGTHS, RESPONSE_LENGTHS, strict=True)):
        prompt_ids[i, lp - p :] = torch.randint(4, vocab, (p,), generator=gen)
        prompt_mask[i, lp - p :] = True
        response_ids[i, :r] = torch.randint(4, vocab, (r,), generator=gen)
        response_mask[i, :r] = True
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        rollout_logp=torch.zeros((rows, lr)),
        policy_version=torch.zeros(rows, dtype=torch.long),
        seeds=torch.arange(rows),
        group_ids=torch.arange(rows) // 2,
        prompt_index=torch.arange(rows) // 2,
        advantages=torch.randn((rows, lr), generator=gen) * response_mask,
        is_replay=torch.arange(rows) % 3 == 0,
        truncated=torch.arange(rows) % 4 == 1,
    )


# ------------------------------------------------------------------------------------------ buckets


def test_buckets_hold_every_row_once_sorted_by_length_within_the_budget() -> None:
    batch = varied_batch()
    buckets = length_buckets(batch, max_rows=len(batch), max_tokens=BUDGET)
    assert len(buckets) > 2
    assert sorted(torch.cat(buckets).tolist()) == list(range(len(batch)))
    totals = torch.tensor(PROMPT_LENGTHS) + torch.tensor(RESPONSE_LENGTHS)
    assert torch.all(totals[torch.cat(buckets)].diff() >= 0)  # short rows together, long rows together
    for rows in buckets:
        cost = len(rows) * (max(PROMPT_LENGTHS[i] for i in rows) + max(RESPONSE_LENGTHS[i] for i in rows))
        assert cost <= BUDGET or len(rows) == 1  # a row longer than the budget goes alone


def test_buckets_respect_the_row_limit_and_without_a_budget_keep_the_order() -> None:
    batch = varied_batch()
    assert all(len(rows) <= 3 for rows in length_buckets(batch, max_rows=3, max_tokens=10_000))
    plain = length_buckets(batch, max_rows=3, max_tokens=None)
    assert [rows.tolist() for rows in plain] == [[0, 1, 2], [3, 4, 5], [6, 7]]


@pytest.mark.parametrize("aggregation", AGG_MODES)
def test_loss_shares_add_the_parts_up_to_the_whole_loss(aggregation: str) -> None:
    batch = varied_batch()
    mask = batch.loss_mask(exclude_truncated=True)  # truncated rows: sequences without valid tokens
    per_token = torch.randn(mask.shape, generator=torch.Generator().manual_seed(1))
    whole = agg_loss(per_token, mask, aggregation)
    parts = length_buckets(batch, max_rows=len(batch), max_tokens=BUDGET)
    summed = sum(loss_share(mask[r], mask, aggregation) * agg_loss(per_token[r], mask[r], aggregation) for r in parts)
    torch.testing.assert_close(summed, whole, atol=1e-6, rtol=1e-6)


def test_trimming_padding_columns_changes_no_log_prob(random_model_dir: str) -> None:
    batch = varied_batch()
    policy, _ = load_policy(_config(random_model_dir, "token-mean", None).model)
    rows = torch.tensor([0, 2, 4])  # short rows: most columns of the batch are padding for them
    part = batch.select(rows)
    trimmed = part.trimmed()
    assert trimmed.prompt_ids.shape[1] == 5 and trimmed.response_ids.shape[1] == 3
    with torch.no_grad():
        logp, entropy = sequence_logprobs(policy, part, temperature=0.8)
        alone = [sequence_logprobs(policy, batch.select([int(i)]).trimmed(), temperature=0.8) for i in rows]
    assert logp.shape == part.response_ids.shape and entropy is not None
    for k, (row_logp, row_entropy) in enumerate(alone):
        assert row_entropy is not None
        n = RESPONSE_LENGTHS[int(rows[k])]
        torch.testing.assert_close(logp[k, :n], row_logp[0, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy[k, :n], row_entropy[0, :n], atol=1e-5, rtol=1e-5)
    assert torch.all(logp[:, 3:] == 0)


# ------------------------------------------------------------------------------- learner update


def _config(model_dir: str, aggregation: str, micro_batch_tokens: int | None, name: str = "remix-grpo") -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "algorithm": {
                "name": name,
                "minibatch_size": 8,
                "loss_aggregation": aggregation,
                "kl_coef": 0.1,
                "entropy_coef": 0.01,
                "micro_batch_tokens": micro_batch_tokens,
            },
            "optim": {"lr": 1e-3},
        }
    )


def _update(
    model_dir: str,
    aggregation: str,
    micro_batch_tokens: int | None,
    *,
    fill_pi_k: bool,
    exclude_truncated: bool,
    name: str = "remix-grpo",
) -> tuple[dict[str, float], list[torch.Tensor], RolloutBatch, PolicyLearner]:
    """One optimizer step of a fresh learner on the varied batch; its metrics, gradients and batch."""
    cfg = _config(model_dir, aggregation, micro_batch_tokens, name)
    policy, _ = load_policy(cfg.model)
    learner = PolicyLearner(cfg, policy, DistContext(), torch.device("cpu"))
    batch = varied_batch()
    noise = torch.Generator().manual_seed(2)
    logp = learner.logprobs(policy, batch)
    mask = batch.response_mask

    def near(scale: float) -> torch.Tensor:  # other policies' log-probs: the learner's, perturbed
        return (logp + scale * torch.randn(logp.shape, generator=noise)) * mask

    batch.behavior_logp, batch.old_logp = near(0.3), near(0.1)
    batch.ref_logp, batch.prev_logp = near(0.2), near(0.05)
    if learner.critic is not None:  # PPO: old values near the critic's, returns the clip sometimes bites on
        batch.values = (learner.critic(batch).detach() + 0.1 * torch.randn(logp.shape, generator=noise)) * mask
        batch.returns = torch.randn(logp.shape, generator=noise) * mask
    if fill_pi_k:
        batch.old_logp = torch.full(logp.shape, float("nan"))
        batch.behavior_logp = torch.where(batch.is_replay[:, None], batch.behavior_logp, batch.old_logp)
    metrics = update_policy(
        learner,
        batch,
        UpdatePlan(epochs=1, lam=0.7, fill_pi_k=fill_pi_k),
        alg=cfg.algorithm,
        temperature=0.9,
        exclude_truncated=exclude_truncated,
        generator=torch.Generator().manual_seed(0),
    )
    grads = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
    return metrics, grads, batch, learner


@pytest.mark.parametrize("aggregation", AGG_MODES)
@pytest.mark.parametrize("exclude_truncated", [False, True])
def test_bucketed_update_has_the_gradients_and_metrics_of_one_pass(
    random_model_dir: str, aggregation: str, exclude_truncated: bool
) -> None:
    assert len(length_buckets(varied_batch(), max_rows=8, max_tokens=BUDGET)) > 2
    whole, whole_grads, _, _ = _update(
        random_model_dir, aggregation, None, fill_pi_k=False, exclude_truncated=exclude_truncated
    )
    parts, part_grads, _, _ = _update(
        random_model_dir, aggregation, BUDGET, fill_pi_k=False, exclude_truncated=exclude_truncated
    )
    assert len(whole_grads) == len(part_grads) > 0
    for expected, got in zip(whole_grads, part_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert set(parts) == set(whole) and {"pg_loss", "kl_ref", "kl_prev", "replay_ratio_mean"} <= set(whole)
    for key, value in whole.items():
        assert parts[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_bucketed_first_forward_fills_pi_k_as_one_pass_does(random_model_dir: str) -> None:
    whole, whole_grads, whole_batch, _ = _update(
        random_model_dir, "token-mean", None, fill_pi_k=True, exclude_truncated=False
    )
    parts, part_grads, part_batch, _ = _update(
        random_model_dir, "token-mean", BUDGET, fill_pi_k=True, exclude_truncated=False
    )
    assert whole_batch.old_logp is not None and part_batch.old_logp is not None
    assert not torch.isnan(part_batch.old_logp).any()
    torch.testing.assert_close(part_batch.old_logp, whole_batch.old_logp, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(part_batch.behavior_logp, whole_batch.behavior_logp, atol=1e-6, rtol=1e-5)
    for expected, got in zip(whole_grads, part_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert parts["clip_frac"] == whole["clip_frac"] and parts["loss"] == pytest.approx(whole["loss"], abs=1e-6)


def test_bucketed_log_prob_passes_return_the_rows_in_order(random_model_dir: str) -> None:
    batch = varied_batch()
    scored = []
    for budget in (None, BUDGET):
        cfg = _config(random_model_dir, "token-mean", budget)
        policy, _ = load_policy(cfg.model)
        scored.append(PolicyLearner(cfg, policy, DistContext(), torch.device("cpu")).logprobs(policy, batch))
    one_pass, bucketed = scored
    torch.testing.assert_close(bucketed, one_pass, atol=1e-6, rtol=1e-5)
    assert torch.all(bucketed[~batch.response_mask] == 0) and torch.all(bucketed[batch.response_mask] < 0)


@pytest.mark.parametrize("aggregation", AGG_MODES)
def test_bucketed_critic_step_has_the_gradients_and_metrics_of_one_pass(
    random_model_dir: str, aggregation: str
) -> None:
    runs = [
        _update(random_model_dir, aggregation, budget, fill_pi_k=False, exclude_truncated=True, name="remix-ppo")
        for budget in (None, BUDGET)
    ]
    (whole, _, _, whole_learner), (parts, _, _, part_learner) = runs
    assert whole_learner.critic is not None and part_learner.critic is not None
    pairs = list(zip(whole_learner.critic.parameters(), part_learner.critic.parameters(), strict=True))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p, _ in pairs)
    for expected, got in pairs:
        assert expected.grad is not None and got.grad is not None
        torch.testing.assert_close(got.grad, expected.grad, atol=1e-6, rtol=1e-4)
    assert {"value_loss", "value_clip_frac"} <= set(whole) and set(parts) == set(whole)
    for key, value in whole.items():
        assert parts[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
