"""The torch-free names of the algorithm's parts are exactly the keys of the torch registries."""

from typing import get_args

from remix_engine.advantages import ADVANTAGES
from remix_engine.components import ADVANTAGE_ESTIMATOR_NAMES, POLICY_LOSS_NAMES
from remix_engine.config import PRESETS, AdvantageEstimatorName, PolicyLossName
from remix_engine.losses import POLICY_LOSSES


def test_the_names_are_the_keys_of_the_registries():
    assert sorted(ADVANTAGE_ESTIMATOR_NAMES) == ADVANTAGES.names()
    assert sorted(POLICY_LOSS_NAMES) == POLICY_LOSSES.names()


def test_the_config_offers_exactly_these_names():
    assert get_args(AdvantageEstimatorName) == ADVANTAGE_ESTIMATOR_NAMES
    assert get_args(PolicyLossName) == POLICY_LOSS_NAMES


def test_every_preset_names_registered_parts():
    for preset in PRESETS.values():
        assert preset.advantage_estimator in ADVANTAGES
        assert preset.policy_loss in POLICY_LOSSES
