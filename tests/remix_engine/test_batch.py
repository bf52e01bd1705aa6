"""Tests of pad_cat, the one helper that joins padded rows (RolloutBatch.concat and the rollout engines)."""

from __future__ import annotations

import torch

from remix_engine.batch import pad_cat


def test_rows_are_padded_to_the_widest_on_the_side_asked_for() -> None:
    short, wide = torch.tensor([[1]]), torch.tensor([[2, 3, 4]])
    assert pad_cat([short, wide], left=True).tolist() == [[0, 0, 1], [2, 3, 4]]
    assert pad_cat([short, wide], 9, left=False).tolist() == [[1, 9, 9], [2, 3, 4]]


def test_masks_are_padded_with_false_and_keep_their_dtype() -> None:
    joined = pad_cat([torch.ones((1, 1), dtype=torch.bool), torch.ones((2, 2), dtype=torch.bool)], left=True)
    assert joined.dtype == torch.bool
    assert joined.tolist() == [[False, True], [True, True], [True, True]]
