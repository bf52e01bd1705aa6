"""Per-token KL estimators: hand-computed values, clamping, non-negativity and unbiasedness."""

import math

import pytest
import torch

from remix_engine.kl import kl_estimate

TOL = {"atol": 1e-6, "rtol": 1e-5}

# Two tokens: logp = [-1.0, -2.0], ref_logp = [-1.5, -1.0].
LOGP = torch.tensor([-1.0, -2.0], dtype=torch.float64)
REF = torch.tensor([-1.5, -1.0], dtype=torch.float64)


def test_k1_is_the_log_ratio():
    # k1 = logp - ref = [-1.0 + 1.5, -2.0 + 1.0] = [0.5, -1.0]
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k1"), torch.tensor([0.5, -1.0], dtype=torch.float64), **TOL)


def test_k2_is_half_the_squared_log_ratio():
    # k2 = 0.5 * [0.5^2, (-1)^2] = [0.125, 0.5]
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k2"), torch.tensor([0.125, 0.5], dtype=torch.float64), **TOL)


def test_k3_hand_values():
    # x = ref - logp = [-0.5, 1.0]
    # k3 = e^x - x - 1: e^-0.5 + 0.5 - 1 = 0.6065306597 - 0.5 = 0.1065306597
    #                   e^1 - 1 - 1 = 2.7182818285 - 2 = 0.7182818285
    expected = torch.tensor([0.1065306597, 0.7182818285], dtype=torch.float64)
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k3"), expected, **TOL)


def test_k3_gradient_wrt_logp():
    # d/dlogp (e^(ref-logp) - (ref-logp) - 1) = 1 - e^(ref-logp): [1 - 0.6065306597, 1 - 2.7182818285]
    logp = LOGP.clone().requires_grad_(True)
    kl_estimate(logp, REF, "k3").sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.3934693403, -1.7182818285], dtype=torch.float64), **TOL)


def test_k3_is_clamped_like_verl_low_var_kl():
    # x = ref - logp = +30 -> clamped to 20 -> e^20 - 21 ~ 4.9e8 -> output clamp 10
    # x = -30 -> clamped to -20 -> e^-20 + 20 - 1 ~ 19.0 -> output clamp 10
    logp = torch.tensor([-30.0, 0.0])
    ref = torch.tensor([0.0, -30.0])
    assert kl_estimate(logp, ref, "k3").tolist() == [10.0, 10.0]
    assert torch.isfinite(kl_estimate(torch.tensor([0.0]), torch.tensor([1e4]), "k3")).all()


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_identical_distributions_give_zero(kind):
    logp = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(3, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["k2", "k3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k2_and_k3_are_non_negative(kind, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    logp = torch.randn(64, 32, generator=gen, dtype=dtype) * 3
    # Include near-identical pairs, where exp(x) - x - 1 would round below 0 in float32.
    scales = torch.tensor([1.0, 1e-3, 1e-5, 1e-7], dtype=dtype).repeat(16).unsqueeze(1)  # (64, 1)
    ref = logp + torch.randn(64, 32, generator=gen, dtype=dtype) * scales
    assert (kl_estimate(logp, ref, kind) >= 0).all()


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_k1_and_k3_are_unbiased_under_exact_expectation(kind):
    # E_{a~p}[estimate] = sum_a p_a * estimate(log p_a, log q_a) must equal KL(p || q).
    gen = torch.Generator().manual_seed(3)
    log_p = torch.log_softmax(torch.randn(6, generator=gen, dtype=torch.float64), dim=0)
    log_q = torch.log_softmax(torch.randn(6, generator=gen, dtype=torch.float64), dim=0)
    exact_kl = float((log_p.exp() * (log_p - log_q)).sum())
    expectation = float((log_p.exp() * kl_estimate(log_p, log_q, kind)).sum())
    assert expectation == pytest.approx(exact_kl, rel=1e-9, abs=1e-12)
    assert exact_kl > 0


def test_unknown_kind_raises_value_error_listing_valid_kinds():
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k4'; valid: k1, k2, k3"):
        kl_estimate(LOGP, REF, "k4")


def test_k3_hand_value_matches_math_module():
    # Cross-check one k3 value against the closed form computed with math.exp.
    x = 0.37
    expected = math.exp(x) - x - 1
    out = kl_estimate(torch.tensor([0.0], dtype=torch.float64), torch.tensor([x], dtype=torch.float64), "k3")
    assert float(out) == pytest.approx(expected, rel=1e-12)
