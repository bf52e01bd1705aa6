"""Registry behaviour, and that every shipped registry and config literal resolve to real entries."""

from typing import get_args

import pytest

from remix_engine.advantages import ADVANTAGES
from remix_engine.config import AlgorithmConfig, KLEstimator, LossAggregation
from remix_engine.losses import AGG_MODES, POLICY_LOSSES
from remix_engine.registry import Registry


def _make() -> Registry:
    registry: Registry = Registry("widget")

    @registry.register("beta")
    def beta() -> str:
        return "b"

    @registry.register("alpha")
    def alpha() -> str:
        return "a"

    return registry


def test_register_returns_the_object_and_get_finds_it():
    registry = _make()
    assert registry.get("alpha")() == "a"
    assert registry.get("beta")() == "b"
    assert registry.names() == ["alpha", "beta"]
    assert "alpha" in registry and "gamma" not in registry
    assert len(registry) == 2
    assert list(registry) == ["alpha", "beta"]


def test_duplicate_name_raises_and_keeps_the_first_entry():
    registry = _make()
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):

        @registry.register("alpha")
        def other() -> str:
            return "other"

    assert registry.get("alpha")() == "a"


def test_empty_name_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        Registry("widget").register("")


def test_miss_raises_key_error_listing_valid_names():
    registry = _make()
    with pytest.raises(KeyError) as info:
        registry.get("gamma")
    message = str(info.value)
    assert "unknown widget 'gamma'" in message
    assert "valid names: alpha, beta" in message


def test_miss_on_empty_registry_says_none_registered():
    with pytest.raises(KeyError, match=r"\(none registered\)"):
        Registry("widget").get("x")


def test_shipped_registries_hold_the_documented_names():
    assert ADVANTAGES.names() == ["gae", "grpo"]
    assert POLICY_LOSSES.names() == ["mix_ppg", "ppo_clip"]
    for registry in (ADVANTAGES, POLICY_LOSSES):
        for name in registry.names():
            assert callable(registry.get(name))


@pytest.mark.parametrize("algorithm", ["remix-grpo", "remix-ppo", "grpo", "ppo"])
def test_every_algorithm_names_a_registered_advantage_estimator(algorithm):
    assert AlgorithmConfig(name=algorithm).advantage_estimator in ADVANTAGES


def test_config_aggregation_literals_match_the_loss_module():
    assert set(get_args(LossAggregation)) == set(AGG_MODES)
    assert set(get_args(KLEstimator)) == {"k1", "k2", "k3"}
