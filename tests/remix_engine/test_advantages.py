"""Advantage estimators: GRPO group normalisation and GAE, against hand values and slow reference loops."""

import statistics

import pytest
import torch

from remix_engine.advantages import ADVANTAGES, gae_returns, group_normalized_scores, masked_whiten
from remix_engine.batch import RolloutBatch
from remix_engine.config import AlgorithmConfig

TOL = {"atol": 1e-6, "rtol": 1e-5}
F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def _batch(mask, group_ids, rewards=None, values=None) -> RolloutBatch:
    mask = torch.as_tensor(mask, dtype=torch.bool)
    batch_size, length = mask.shape
    zeros_long = torch.zeros(batch_size, dtype=torch.long)
    return RolloutBatch(
        prompt_ids=torch.zeros(batch_size, 2, dtype=torch.long),
        prompt_mask=torch.ones(batch_size, 2, dtype=torch.bool),
        response_ids=torch.zeros(batch_size, length, dtype=torch.long),
        response_mask=mask,
        rollout_logp=torch.zeros(batch_size, length),
        policy_version=zeros_long,
        seeds=zeros_long,
        group_ids=torch.as_tensor(group_ids, dtype=torch.long),
        prompt_index=zeros_long,
        rewards=None if rewards is None else torch.as_tensor(rewards),
        values=None if values is None else torch.as_tensor(values),
    )


def _mask_from_lengths(lengths, length):
    return torch.arange(length).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)


# ---------------------------------------------------------------- GRPO


def test_grpo_hand_values_and_metrics():
    # group 0 (ids 7): rewards [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.5773502692
    #                  adv = +-0.5 / (0.5773502692 + 1e-6) = +-0.8660239038
    # group 1 (ids 3): rewards [1, 1, 1]: no spread -> 0
    # group 2 (id 9):  a single response -> 0 (no peer to act as baseline)
    # group 3 (ids 5): rewards [2.0, 0.5]: mean 1.25, unbiased std sqrt(2 * 0.5625 / 1) = 1.0606601718
    #                  adv = +-0.75 / (1.0606601718 + 1e-6) = +-0.7071061145
    group_ids = [7, 7, 3, 7, 3, 7, 3, 9, 5, 5]
    rewards = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.5]
    lengths = [1, 2, 3, 3, 1, 2, 3, 2, 1, 3]
    mask = _mask_from_lengths(lengths, 3)
    a, b = 0.8660239038, 0.7071061145
    per_response = [a, -a, 0.0, -a, 0.0, a, 0.0, 0.0, b, -b]
    advantages, metrics = ADVANTAGES.get("grpo")(
        _batch(mask, group_ids, torch.tensor(rewards, dtype=F64)), cfg=AlgorithmConfig()
    )
    expected = torch.where(mask, torch.tensor(per_response, dtype=F64).unsqueeze(1), 0.0)
    torch.testing.assert_close(advantages, expected, **TOL)
    assert advantages.dtype == F64
    token_values = [v for v, n in zip(per_response, lengths, strict=True) for _ in range(n)]
    assert metrics["adv_mean"] == pytest.approx(statistics.fmean(token_values), abs=1e-6)
    assert metrics["adv_std"] == pytest.approx(statistics.pstdev(token_values), abs=1e-6)
    assert metrics["frac_negative_adv"] == pytest.approx(8 / 21, abs=1e-12)  # 2 + 3 + 3 tokens of rows 1, 3, 9
    assert metrics["frac_zero_std_groups"] == pytest.approx(0.5, abs=1e-12)  # groups 3 and 9 of 4


def test_grpo_equal_non_binary_rewards_give_exactly_zero():
    # float32 mean of [0.3, 0.3, 0.3] is not exactly 0.3; the estimator must not amplify that noise.
    advantages, metrics = ADVANTAGES.get("grpo")(
        _batch(torch.ones(3, 2), [0, 0, 0], torch.tensor([0.3, 0.3, 0.3])), cfg=AlgorithmConfig()
    )
    assert torch.equal(advantages, torch.zeros(3, 2))
    assert metrics["frac_zero_std_groups"] == 1.0


def _grpo_reference(rewards, group_ids, mask, eps=1e-6):
    """Slow per-group loop in the style of verl's compute_grpo_outcome_advantage."""
    scores = torch.zeros(len(rewards), dtype=F64)
    by_group: dict[int, list[int]] = {}
    for i, gid in enumerate(group_ids.tolist()):
        by_group.setdefault(gid, []).append(i)
    for members in by_group.values():
        group_rewards = rewards[members].double()
        if len(members) == 1 or bool((group_rewards == group_rewards[0]).all()):
            continue  # no spread: advantage 0
        mean, std = group_rewards.mean(), torch.std(group_rewards)
        for i in members:
            scores[i] = (rewards[i] - mean) / (std + eps)
    return torch.where(mask, scores.unsqueeze(1), 0.0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("num_groups", "length"), [(1, 1), (3, 5), (16, 9)])
def test_grpo_vectorized_matches_reference_loop(seed, num_groups, length):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 6, (num_groups,), generator=gen)
    group_ids = torch.repeat_interleave(torch.randperm(1000, generator=gen)[:num_groups], sizes)
    group_ids = group_ids[torch.randperm(len(group_ids), generator=gen)]  # interleaved groups
    batch_size = len(group_ids)
    if seed % 2:
        rewards = torch.randint(0, 2, (batch_size,), generator=gen).double()  # binary outcomes
    else:
        rewards = torch.randn(batch_size, generator=gen, dtype=F64)
    mask = _mask_from_lengths(torch.randint(0, length + 1, (batch_size,), generator=gen), length)
    advantages, _ = ADVANTAGES.get("grpo")(_batch(mask, group_ids, rewards), cfg=AlgorithmConfig())
    torch.testing.assert_close(advantages, _grpo_reference(rewards, group_ids, mask), **TOL)


def test_group_normalized_scores_rejects_non_finite_rewards():
    with pytest.raises(ValueError, match="rewards must be finite"):
        group_normalized_scores(torch.tensor([1.0, NAN]), torch.tensor([0, 0]))


@pytest.mark.parametrize(("name", "missing"), [("grpo", "rewards"), ("gae", "rewards"), ("gae", "values")])
def test_estimators_name_the_missing_field(name, missing):
    batch = _batch(torch.ones(2, 2), [0, 0], rewards=[1.0, 0.0], values=torch.zeros(2, 2))
    setattr(batch, missing, None)
    with pytest.raises(ValueError, match=f"'{name}' needs batch.{missing}"):
        ADVANTAGES.get(name)(batch, cfg=AlgorithmConfig())


# ---------------------------------------------------------------- GAE


def test_gae_returns_hand_values():
    # gamma 0.9, lambda 0.8 (gamma*lambda = 0.72). Row 0: values [0.5, 0.6, 0.7], reward 1 on token 2.
    #   t2: delta = 1 + 0.9*0 - 0.7 = 0.3                      A2 = 0.3
    #   t1: delta = 0 + 0.9*0.7 - 0.6 = 0.03                    A1 = 0.03 + 0.72*0.3   = 0.246
    #   t0: delta = 0 + 0.9*0.6 - 0.5 = 0.04                    A0 = 0.04 + 0.72*0.246 = 0.21712
    #   returns = A + V = [0.71712, 0.846, 1.0]
    # Row 1: one valid token, value 0.2, reward 0: A0 = 0 - 0.2 = -0.2, return 0; nan/inf padding ignored.
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, NAN, INF]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    advantages, returns = gae_returns(torch.tensor([1.0, 0.0], dtype=F64), values, mask, 0.9, 0.8)
    torch.testing.assert_close(advantages, torch.tensor([[0.21712, 0.246, 0.3], [-0.2, 0, 0]], dtype=F64), **TOL)
    torch.testing.assert_close(returns, torch.tensor([[0.71712, 0.846, 1.0], [0.0, 0, 0]], dtype=F64), **TOL)


def _gae_reference(rewards, values, lengths, gamma, lam):
    """Classic per-response backward loop over the valid prefix (right-padded responses)."""
    advantages = torch.zeros_like(values)
    for i, n in enumerate(lengths.tolist()):
        next_value, next_adv = 0.0, 0.0
        for t in reversed(range(n)):
            reward = float(rewards[i]) if t == n - 1 else 0.0
            delta = reward + gamma * next_value - float(values[i, t])
            next_adv = delta + gamma * lam * next_adv
            next_value = float(values[i, t])
            advantages[i, t] = next_adv
    return advantages


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0)])
def test_gae_matches_reference_loop(seed, gamma, lam):
    gen = torch.Generator().manual_seed(seed)
    batch_size, length = 6, 8
    lengths = torch.randint(0, length + 1, (batch_size,), generator=gen)
    mask = _mask_from_lengths(lengths, length)
    values = torch.randn(batch_size, length, generator=gen, dtype=F64)
    rewards = torch.randint(0, 2, (batch_size,), generator=gen).double()
    advantages, returns = gae_returns(rewards, values, mask, gamma, lam)
    expected = _gae_reference(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected, **TOL)
    torch.testing.assert_close(returns, torch.where(mask, expected + values, 0.0), **TOL)


def test_gae_with_unit_gamma_and_lambda_telescopes_to_reward_minus_value():
    # With gamma = lambda = 1 and reward only at the end, A_t = R - V_t and every return equals R.
    gen = torch.Generator().manual_seed(11)
    mask = _mask_from_lengths([4, 1, 3], 4)
    values = torch.randn(3, 4, generator=gen, dtype=F64)
    rewards = torch.tensor([1.0, 0.0, 2.5], dtype=F64)
    advantages, returns = gae_returns(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(advantages, torch.where(mask, rewards.unsqueeze(1) - values, 0.0), **TOL)
    torch.testing.assert_close(returns, torch.where(mask, rewards.unsqueeze(1).expand(3, 4), 0.0), **TOL)


def test_gae_estimator_whitens_over_valid_tokens_with_config_gamma_lambda():
    cfg = AlgorithmConfig(name="remix-ppo", gae_gamma=0.9, gae_lambda=0.8)
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, NAN, INF]], dtype=F64)
    mask = [[1, 1, 1], [1, 0, 0]]
    advantages, metrics = ADVANTAGES.get("gae")(_batch(mask, [0, 1], [1.0, 0.0], values), cfg=cfg)
    raw = [0.21712, 0.246, 0.3, -0.2]  # from test_gae_returns_hand_values
    mean, std = statistics.fmean(raw), statistics.stdev(raw)  # verl whitening: unbiased variance
    whitened = [(x - mean) / (std**2 + 1e-8) ** 0.5 for x in raw]
    expected = torch.tensor([whitened[:3], [whitened[3], 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(advantages, expected, **TOL)
    assert metrics["adv_mean"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["raw_adv_mean"] == pytest.approx(mean, abs=1e-9)
    assert metrics["returns_mean"] == pytest.approx((0.71712 + 0.846 + 1.0 + 0.0) / 4, abs=1e-9)
    assert metrics["frac_negative_adv"] == pytest.approx(0.25, abs=1e-12)  # only -0.2 is below the mean 0.14078


def test_masked_whiten_edge_cases():
    assert torch.equal(
        masked_whiten(torch.tensor([[NAN, 1.0]]), torch.zeros(1, 2, dtype=torch.bool)), torch.zeros(1, 2)
    )
    single = masked_whiten(torch.tensor([[3.0, NAN]]), torch.tensor([[True, False]]))
    assert torch.equal(single, torch.zeros(1, 2))
