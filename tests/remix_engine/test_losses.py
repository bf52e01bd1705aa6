"""Loss terms: hand-computed values, aggregation modes, masking with nan/inf, and the Mix-PPG invariants."""

import math

import pytest
import torch

from remix_engine.config import AlgorithmConfig
from remix_engine.kl import kl_estimate
from remix_engine.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    entropy_bonus,
    kl_convex_loss,
    mix_ppg_loss,
    ppo_clip_loss,
    value_loss,
)

TOL = {"atol": 1e-6, "rtol": 1e-5}
F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def _t(rows):
    return torch.tensor(rows, dtype=F64)


def _mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


def _random_inputs(seed, batch=5, length=7):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, length, generator=gen, dtype=F64) * 3
    old = logp + 0.3 * torch.randn(batch, length, generator=gen, dtype=F64)
    behavior = old + 0.3 * torch.randn(batch, length, generator=gen, dtype=F64)
    advantages = torch.randn(batch, length, generator=gen, dtype=F64)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return logp, old, behavior, advantages, mask


# ---------------------------------------------------------------- agg_loss

# loss_mat rows [1, 2, 3] and [4, 5, 6]; valid tokens: (1, 2) in row 0 and (4) in row 1.
AGG_LOSS = _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
AGG_MASK = _mask([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", 7.0 / 3.0),  # (1 + 2 + 4) / 3 valid tokens
        ("seq-mean-token-mean", 2.75),  # mean(1.5, 4.0): row means (1+2)/2 and 4/1
        ("seq-mean-token-sum", 3.5),  # mean(3, 4): row sums
    ],
)
def test_agg_loss_hand_values(mode, expected):
    assert float(agg_loss(AGG_LOSS, AGG_MASK, mode)) == pytest.approx(expected, abs=1e-12)


def test_token_mean_and_seq_mean_differ_only_when_lengths_differ():
    token = agg_loss(AGG_LOSS, AGG_MASK, "token-mean")
    seq = agg_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-mean")
    assert not torch.allclose(token, seq)
    equal_lengths = _mask([[1, 1, 0], [1, 1, 0]])
    torch.testing.assert_close(
        agg_loss(AGG_LOSS, equal_lengths, "token-mean"),
        agg_loss(AGG_LOSS, equal_lengths, "seq-mean-token-mean"),
    )


def test_empty_rows_are_excluded_from_seq_mean_token_mean_only():
    loss_mat = torch.cat([AGG_LOSS, _t([[7.0, 8.0, 9.0]])])
    mask = torch.cat([AGG_MASK, _mask([[0, 0, 0]])])
    assert float(agg_loss(loss_mat, mask, "token-mean")) == pytest.approx(7.0 / 3.0, abs=1e-12)
    assert float(agg_loss(loss_mat, mask, "seq-mean-token-mean")) == pytest.approx(2.75, abs=1e-12)
    # seq-mean-token-sum averages over all 3 rows: (3 + 4 + 0) / 3
    assert float(agg_loss(loss_mat, mask, "seq-mean-token-sum")) == pytest.approx(7.0 / 3.0, abs=1e-12)


@pytest.mark.parametrize(
    ("mode", "expected_grad"),
    [
        ("token-mean", [[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]]),
        ("seq-mean-token-mean", [[0.25, 0.25, 0.0], [0.5, 0.0, 0.0]]),  # 1/(len * 2 rows)
        ("seq-mean-token-sum", [[0.5, 0.5, 0.0], [0.5, 0.0, 0.0]]),  # 1/2 rows
    ],
)
def test_masked_nan_and_inf_contribute_exactly_zero_value_and_gradient(mode, expected_grad):
    loss_mat = _t([[1.0, 2.0, NAN], [4.0, INF, -INF]]).requires_grad_(True)
    clean = agg_loss(AGG_LOSS, AGG_MASK, mode)
    loss = agg_loss(loss_mat, AGG_MASK, mode)
    assert loss.item() == clean.item()
    loss.backward()
    torch.testing.assert_close(loss_mat.grad, _t(expected_grad), **TOL)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_empty_mask_gives_zero_loss_still_connected_to_the_graph(mode):
    loss_mat = _t([[NAN, 1.0], [2.0, INF]]).requires_grad_(True)
    loss = agg_loss(loss_mat, torch.zeros(2, 2, dtype=torch.bool), mode)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(loss_mat.grad, torch.zeros(2, 2, dtype=F64))


def test_agg_loss_accepts_a_float_mask():
    assert float(agg_loss(AGG_LOSS, AGG_MASK.double(), "token-mean")) == pytest.approx(7.0 / 3.0, abs=1e-12)


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        agg_loss(AGG_LOSS, AGG_MASK, "sum")


# ---------------------------------------------------------------- ppo_clip


def test_ppo_clip_hand_values_metrics_and_gradient():
    # eps = 0.2, window [0.8, 1.2]; per token: r, A -> max(-A*r, -A*clip(r))
    #   r=1.1 A=+1: max(-1.1, -1.1) = -1.1  (inside window)
    #   r=1.5 A=+1: max(-1.5, -1.2) = -1.2  clipped
    #   r=0.5 A=-1: max( 0.5,  0.8) =  0.8  clipped
    #   r=0.9 A=-1: max( 0.9,  0.9) =  0.9  (inside window)
    #   r=0.5 A=+2: max(-1.0, -1.6) = -1.0  not clipped (the clip is only pessimistic)
    #   r=1.5 A=-2: max( 3.0,  2.4) =  3.0  not clipped
    # token-mean = (-1.1 - 1.2 + 0.8 + 0.9 - 1.0 + 3.0) / 6 = 1.4 / 6
    ratios = _t([[1.1, 1.5, 0.5, 0.9, 0.5, 1.5]])
    advantages = _t([[1.0, 1.0, -1.0, -1.0, 2.0, -2.0]])
    old = _t([[-1.0, -2.0, -0.5, -3.0, -1.5, -0.7]])
    logp = (old + ratios.log()).requires_grad_(True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss, metrics = ppo_clip_loss(logp, old, old - 5.0, advantages, mask, clip_eps=0.2, agg="token-mean")
    assert loss.item() == pytest.approx(1.4 / 6, abs=1e-9)
    assert metrics["pg_loss"] == pytest.approx(1.4 / 6, abs=1e-9)
    assert metrics["clip_frac"] == pytest.approx(2 / 6, abs=1e-12)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-9)  # (1.1+1.5+0.5+0.9+0.5+1.5)/6
    assert metrics["ratio_max"] == pytest.approx(1.5, abs=1e-9)
    assert metrics["ratio_min"] == pytest.approx(0.5, abs=1e-9)
    assert metrics["centre_mean"] == 1.0
    assert metrics["tv"] == pytest.approx(0.5 * 2.2 / 6, abs=1e-9)  # 0.5 * mean|r - 1|
    loss.backward()
    # d/dlogp of -A*r/N is -A*r/N on unclipped tokens, 0 where the clipped branch is active.
    expected = _t([[-1.1 / 6, 0.0, 0.0, 0.9 / 6, -1.0 / 6, 3.0 / 6]])
    torch.testing.assert_close(logp.grad, expected, **TOL)


# ---------------------------------------------------------------- mix_ppg


def test_mix_ppg_hand_values_with_clip_centred_at_pi_k_over_pi_behavior():
    # c = pi_k/pi_behavior, window [c - 0.2, c + 0.2]:
    #   c=1.5 r=1.6 A=+1: window [1.3, 1.7], r inside -> -1.6 (PPO's [0.8, 1.2] would clip)
    #   c=1.5 r=1.0 A=-1: r < 1.3 -> max(1.0, 1.3) = 1.3 clipped (PPO would not clip r=1)
    #   c=0.6 r=1.1 A=+1: window [0.4, 0.8] -> max(-1.1, -0.8) = -0.8 clipped
    #   c=0.6 r=0.5 A=+2: r inside -> -1.0
    #   5th token is padding full of nan/inf and must not matter.
    # token-mean = (-1.6 + 1.3 - 0.8 - 1.0) / 4 = -2.1 / 4 = -0.525
    behavior = _t([[-1.0, -2.0, -0.5, -3.0, -INF]])
    centres = _t([[1.5, 1.5, 0.6, 0.6, 1.0]])
    ratios = _t([[1.6, 1.0, 1.1, 0.5, 1.0]])
    old = behavior + centres.log()
    old[0, 4] = INF
    logp = behavior + ratios.log()
    logp[0, 4] = NAN
    logp.requires_grad_(True)
    advantages = _t([[1.0, -1.0, 1.0, 2.0, NAN]])
    mask = _mask([[1, 1, 1, 1, 0]])
    loss, metrics = mix_ppg_loss(logp, old, behavior, advantages, mask, clip_eps=0.2, agg="token-mean")
    assert loss.item() == pytest.approx(-0.525, abs=1e-9)
    assert metrics["clip_frac"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["ratio_mean"] == pytest.approx(1.05, abs=1e-9)  # (1.6+1.0+1.1+0.5)/4
    assert metrics["ratio_max"] == pytest.approx(1.6, abs=1e-9)
    assert metrics["ratio_min"] == pytest.approx(0.5, abs=1e-9)
    assert metrics["centre_mean"] == pytest.approx(1.05, abs=1e-9)  # (1.5+1.5+0.6+0.6)/4
    assert metrics["tv"] == pytest.approx(0.15, abs=1e-9)  # 0.5 * (0.1+0.5+0.5+0.1)/4
    assert all(math.isfinite(v) for v in metrics.values())
    loss.backward()
    # Unclipped tokens: -A*r/N = -1.6/4 and -2*0.5/4; clipped and masked tokens: exactly 0.
    torch.testing.assert_close(logp.grad, _t([[-0.4, 0.0, 0.0, -0.25, 0.0]]), **TOL)


def test_window_centre_decides_clipping_not_one():
    # r = 1.6 is outside PPO's [0.8, 1.2] but inside [c - eps, c + eps] for c = 1.5: no clip.
    # r = 1.0 is inside [0.8, 1.2] but outside [1.3, 1.7]: clipped.
    behavior = _t([[-1.0, -1.0]])
    old = behavior + math.log(1.5)
    logp = behavior + _t([[1.6, 1.0]]).log()
    advantages = _t([[1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    _, inside = mix_ppg_loss(
        logp[:, :1],
        old[:, :1],
        behavior[:, :1],
        advantages[:, :1],
        mask[:, :1],
        clip_eps=0.2,
        agg="token-mean",
    )
    _, outside = mix_ppg_loss(
        logp[:, 1:],
        old[:, 1:],
        behavior[:, 1:],
        advantages[:, 1:],
        mask[:, 1:],
        clip_eps=0.2,
        agg="token-mean",
    )
    assert inside["clip_frac"] == 0.0
    assert outside["clip_frac"] == 1.0
    # The same tokens under a window centred at 1 clip the other way round.
    _, ppo_inside = ppo_clip_loss(
        logp[:, :1],
        behavior[:, :1],
        behavior[:, :1],
        advantages[:, :1],
        mask[:, :1],
        clip_eps=0.2,
        agg="token-mean",
    )
    _, ppo_outside = ppo_clip_loss(
        logp[:, 1:],
        behavior[:, 1:],
        behavior[:, 1:],
        advantages[:, 1:],
        mask[:, 1:],
        clip_eps=0.2,
        agg="token-mean",
    )
    assert ppo_inside["clip_frac"] == 1.0
    assert ppo_outside["clip_frac"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_mix_ppg_equals_ppo_clip_when_behavior_is_old(seed, agg):
    logp, old, _, advantages, mask = _random_inputs(seed)
    grads, results = [], []
    for name in ("mix_ppg", "ppo_clip"):
        leaf = logp.clone().requires_grad_(True)
        loss, metrics = POLICY_LOSSES.get(name)(leaf, old, old.clone(), advantages, mask, clip_eps=0.2, agg=agg)
        loss.backward()
        grads.append(leaf.grad)
        results.append((loss.item(), metrics))
    assert results[0] == results[1]
    assert torch.equal(grads[0], grads[1])
    assert results[0][1]["clip_frac"] > 0  # the random case does exercise clipping


@pytest.mark.parametrize("name", ["mix_ppg", "ppo_clip"])
def test_fresh_data_has_ratio_one_no_clipping_and_the_vanilla_pg_gradient(name):
    logp, _, _, advantages, mask = _random_inputs(4)
    leaf = logp.clone().requires_grad_(True)
    loss, metrics = POLICY_LOSSES.get(name)(
        leaf, logp.clone(), logp.clone(), advantages, mask, clip_eps=0.2, agg="token-mean"
    )
    assert metrics["ratio_max"] == 1.0 and metrics["ratio_min"] == 1.0
    assert metrics["clip_frac"] == 0.0 and metrics["tv"] == 0.0
    n_valid = int(mask.sum())
    assert loss.item() == pytest.approx(float(-(advantages * mask).sum() / n_valid), abs=1e-12)
    loss.backward()
    torch.testing.assert_close(leaf.grad, torch.where(mask, -advantages / n_valid, 0.0), **TOL)


def test_extreme_log_ratios_stay_finite():
    logp = _t([[0.0, -200.0]]).requires_grad_(True)
    behavior = _t([[-200.0, 0.0]])
    loss, metrics = mix_ppg_loss(
        logp,
        behavior,
        behavior,
        _t([[1.0, -1.0]]),
        torch.ones(1, 2, dtype=torch.bool),
        clip_eps=0.2,
        agg="token-mean",
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert metrics["ratio_max"] == pytest.approx(math.exp(20.0))  # log-ratio clamped to [-20, 20]


@pytest.mark.parametrize("name", ["mix_ppg", "ppo_clip"])
def test_policy_loss_with_empty_mask_is_zero_and_metrics_are_finite(name):
    logp = _t([[NAN, 1.0]]).requires_grad_(True)
    loss, metrics = POLICY_LOSSES.get(name)(
        logp,
        logp.detach(),
        logp.detach(),
        _t([[1.0, INF]]),
        torch.zeros(1, 2, dtype=torch.bool),
        clip_eps=0.2,
        agg="token-mean",
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(1, 2, dtype=F64))
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


# ---------------------------------------------------------------- entropy bonus


def test_entropy_bonus_is_negative_coef_times_mean_entropy():
    # valid entropies 0.5, 1.0, 2.0 -> token-mean 3.5/3; loss = -0.01 * 3.5/3
    entropy = _t([[0.5, 1.0, NAN], [2.0, INF, 3.0]]).requires_grad_(True)
    mask = _mask([[1, 1, 0], [1, 0, 0]])
    loss, metrics = entropy_bonus(entropy, mask, coef=0.01, agg="token-mean")
    assert loss.item() == pytest.approx(-0.01 * 3.5 / 3, abs=1e-12)
    assert metrics == {"entropy": pytest.approx(3.5 / 3, abs=1e-12)}
    loss.backward()
    # Gradient descent on the loss raises entropy: d loss / d entropy = -coef/N < 0 on valid tokens.
    torch.testing.assert_close(entropy.grad, _t([[-0.01 / 3, -0.01 / 3, 0.0], [-0.01 / 3, 0.0, 0.0]]), **TOL)


# ---------------------------------------------------------------- KL-Convex

KL_LOGP = _t([[-1.0, -2.0, NAN]])
KL_REF = _t([[-1.5, -1.0, INF]])
KL_PREV = _t([[-1.2, -2.4, -INF]])
KL_MASK = _mask([[1, 1, 0]])


def test_kl_convex_hand_values_k1():
    # k1 ref = logp - ref = [0.5, -1.0]; k1 prev = [0.2, 0.4]
    # 0.75*[0.5, -1.0] + 0.25*[0.2, 0.4] = [0.425, -0.65]; token-mean -0.1125; * coef 0.5 = -0.05625
    loss, metrics = kl_convex_loss(KL_LOGP, KL_REF, KL_PREV, KL_MASK, lam=0.75, coef=0.5, kind="k1", agg="token-mean")
    assert loss.item() == pytest.approx(-0.05625, abs=1e-9)
    assert metrics["kl_ref"] == pytest.approx(-0.25, abs=1e-9)  # mean(0.5, -1.0)
    assert metrics["kl_prev"] == pytest.approx(0.3, abs=1e-9)  # mean(0.2, 0.4)
    assert metrics["lambda"] == 0.75
    assert metrics["kl_loss"] == pytest.approx(-0.05625, abs=1e-9)


def test_kl_convex_hand_values_and_gradient_k3():
    # k3 ref : x = ref - logp = [-0.5, 1.0]  -> [e^-0.5 - 0.5, e - 2]   = [0.1065306597, 0.7182818285]
    # k3 prev: x = prev - logp = [-0.2, -0.4] -> [e^-0.2 - 0.8, e^-0.4 - 0.6] = [0.0187307531, 0.0703200460]
    # convex:  0.75*ref + 0.25*prev = [0.0845806831, 0.5562913829]; mean 0.3204360330; * 0.5 = 0.1602180165
    logp = KL_LOGP.clone().requires_grad_(True)
    loss, metrics = kl_convex_loss(logp, KL_REF, KL_PREV, KL_MASK, lam=0.75, coef=0.5, kind="k3", agg="token-mean")
    assert loss.item() == pytest.approx(0.1602180165, abs=1e-9)
    assert metrics["kl_ref"] == pytest.approx((0.1065306597 + 0.7182818285) / 2, abs=1e-9)
    assert metrics["kl_prev"] == pytest.approx((0.0187307531 + 0.0703200460) / 2, abs=1e-9)
    loss.backward()
    # d/dlogp = coef/N * (lam*(1 - e^x_ref) + (1-lam)*(1 - e^x_prev))
    #   token 0: 0.25 * (0.75*0.3934693403 + 0.25*0.1812692469) = 0.0851048292
    #   token 1: 0.25 * (0.75*(-1.7182818285) + 0.25*0.3296799540) = -0.3015728457
    torch.testing.assert_close(logp.grad, _t([[0.0851048292, -0.3015728457, 0.0]]), **TOL)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_kl_convex_endpoints_are_the_pure_kls(kind, agg):
    logp, ref, prev, _, mask = _random_inputs(5)
    pure_ref = 0.1 * agg_loss(kl_estimate(logp, ref, kind), mask, agg)
    pure_prev = 0.1 * agg_loss(kl_estimate(logp, prev, kind), mask, agg)
    lam1, _ = kl_convex_loss(logp, ref, prev, mask, lam=1.0, coef=0.1, kind=kind, agg=agg)
    lam0, _ = kl_convex_loss(logp, ref, prev, mask, lam=0.0, coef=0.1, kind=kind, agg=agg)
    torch.testing.assert_close(lam1, pure_ref, **TOL)
    torch.testing.assert_close(lam0, pure_prev, **TOL)
    # The zero-weight anchor may be omitted.
    no_prev, metrics = kl_convex_loss(logp, ref, None, mask, lam=1.0, coef=0.1, kind=kind, agg=agg)
    torch.testing.assert_close(no_prev, pure_ref, **TOL)
    assert "kl_prev" not in metrics and metrics["kl_ref"] > 0


def test_kl_convex_with_zero_coefficient_needs_no_anchor():
    loss, metrics = kl_convex_loss(KL_LOGP, None, None, KL_MASK, lam=1.0, coef=0.0, kind="k3", agg="token-mean")
    assert float(loss) == 0.0 and "kl_ref" not in metrics and "kl_prev" not in metrics


def test_kl_convex_rejects_bad_lambda_and_missing_weighted_anchor():
    with pytest.raises(ValueError, match=r"lambda must be in \[0, 1\]"):
        kl_convex_loss(KL_LOGP, KL_REF, KL_PREV, KL_MASK, lam=1.5, coef=0.1, kind="k3", agg="token-mean")
    with pytest.raises(ValueError, match="kl_prev: log-probs are required"):
        kl_convex_loss(KL_LOGP, KL_REF, None, KL_MASK, lam=0.9, coef=0.1, kind="k3", agg="token-mean")


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (50, 1.0), (51, 0.9), (60, 0.9), (61, 0.8), (71, 0.7), (91, 0.5), (200, 0.5)],
)
def test_lambda_schedule_of_the_default_config(step, expected):
    assert AlgorithmConfig().lambda_at(step) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- value loss


def test_value_loss_hand_values_and_gradient():
    # clip 0.2: v_clip = old + clamp(v - old, -0.2, 0.2); per token 0.5 * max((v-R)^2, (v_clip-R)^2)
    #   v=1.0 old=0.9 R=1.5: v_clip=1.0 -> max(0.25, 0.25) = 0.25
    #   v=1.5 old=1.0 R=2.0: v_clip=1.2 -> max(0.25, 0.64) = 0.64  (clipped branch active)
    #   v=1.5 old=1.0 R=1.0: v_clip=1.2 -> max(0.25, 0.04) = 0.25
    #   v=0.0 old=0.5 R=1.0: v_clip=0.3 -> max(1.00, 0.49) = 1.00
    # token-mean (0.25 + 0.64 + 0.25 + 1.0) / 4 = 0.535; * 0.5 = 0.2675
    values = _t([[1.0, 1.5, 1.5, 0.0, NAN]]).requires_grad_(True)
    old_values = _t([[0.9, 1.0, 1.0, 0.5, INF]])
    returns = _t([[1.5, 2.0, 1.0, 1.0, NAN]])
    mask = _mask([[1, 1, 1, 1, 0]])
    loss, metrics = value_loss(values, old_values, returns, mask, clip=0.2, agg="token-mean")
    assert loss.item() == pytest.approx(0.2675, abs=1e-9)
    assert metrics["value_loss"] == pytest.approx(0.2675, abs=1e-9)
    assert metrics["value_clip_frac"] == pytest.approx(0.25, abs=1e-12)
    loss.backward()
    # unclipped branch: 0.5 * 2 * (v - R) / 4; the active clipped branch sits at its bound -> 0
    torch.testing.assert_close(values.grad, _t([[-0.125, 0.0, 0.125, -0.25, 0.0]]), **TOL)
