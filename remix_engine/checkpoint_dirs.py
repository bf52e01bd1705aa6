"""Names of checkpoint folders: `step-000010` holds the checkpoint of step 10. Torch-free.

The engine writes them (remix_engine/checkpoint.py), the worker registers and prunes them, and the
service names artifact keys and download archives after them, all through these two functions.
"""

from __future__ import annotations

import re

CHECKPOINT_DIR_PREFIX = "step-"
_STEP_DIGITS = 6
_CHECKPOINT_DIR = re.compile(rf"{CHECKPOINT_DIR_PREFIX}(?P<step>[0-9]{{{_STEP_DIGITS},}})")


def checkpoint_dir_name(step: int) -> str:
    """The folder name of the checkpoint of `step`: the step zero-padded to six digits."""
    if step < 0:
        raise ValueError(f"a checkpoint step is never negative, got {step}")
    return f"{CHECKPOINT_DIR_PREFIX}{step:0{_STEP_DIGITS}d}"


def step_of_checkpoint_dir(name: str) -> int | None:
    """The step of a checkpoint folder name; None for any other name.

    Only the names `checkpoint_dir_name` writes count ('step-000010', not 'step-10', 'step-0000010',
    'step-', 'step-x' or '.tmp-step-000010-7'), so two folders can never claim the same step.
    """
    match = _CHECKPOINT_DIR.fullmatch(name)
    if match is None:
        return None
    step = int(match.group("step"))
    return step if checkpoint_dir_name(step) == name else None
