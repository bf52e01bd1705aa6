"""Checkpoint folder names: written and read back by one pair of functions; other names are no checkpoint."""

import pytest

from remix_engine.checkpoint_dirs import checkpoint_dir_name, step_of_checkpoint_dir


@pytest.mark.parametrize(("step", "name"), [(0, "step-000000"), (10, "step-000010"), (123456, "step-123456")])
def test_names_are_zero_padded_to_six_digits(step, name):
    assert checkpoint_dir_name(step) == name
    assert step_of_checkpoint_dir(name) == step


def test_steps_beyond_six_digits_round_trip():
    assert checkpoint_dir_name(1_234_567) == "step-1234567"
    assert step_of_checkpoint_dir("step-1234567") == 1_234_567


def test_a_negative_step_has_no_folder():
    with pytest.raises(ValueError, match="never negative"):
        checkpoint_dir_name(-1)


@pytest.mark.parametrize(
    "name",
    [
        "step-",
        "step-x",
        "step-01",  # not zero-padded to six digits: not a name the engine writes
        "step-10",
        "step-0000010",  # padded too far: would claim step 10 beside step-000010
        "step-00001x",
        "step-000010\n",
        "step-٠٠٠٠١٠",  # Arabic-Indic digits are digits to str.isdigit, not to a checkpoint name
        ".tmp-step-000010-7",
        ".old-step-000010-7",
        "Step-000010",
        "step-000010/trainer_state",
        "trainer_state",
    ],
)
def test_other_names_are_not_checkpoints(name):
    assert step_of_checkpoint_dir(name) is None
