"""Tests of what the rollout engines share: generate's preamble and the RolloutBatch assembly."""

from __future__ import annotations

import pytest
import torch

from remix_engine.rollout.engine import assemble_batch, prompt_of_each_response


def test_each_prompt_is_answered_group_size_times_in_order() -> None:
    rows = prompt_of_each_response(["a", "b"], ["1", "2"], [7, 9], 3, seeds=[0, 1, 2, 3, 4, 5])
    assert rows == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("answers", "prompt_index", "seeds", "message"),
    [
        (["1"], [7, 9], [0, 1], "same length"),
        (["1", "2"], [7, 9], [0, 1, 2], "need len"),
    ],
)
def test_inconsistent_generate_arguments_are_refused(answers, prompt_index, seeds, message) -> None:
    with pytest.raises(ValueError, match=message):
        prompt_of_each_response(["a", "b"], answers, prompt_index, 1, seeds)


def test_the_assembled_batch_pads_outside_its_masks_and_labels_every_response() -> None:
    prompt_mask = torch.tensor([[False, True], [True, True]])
    response_mask = torch.tensor([[True, False], [True, True]])
    batch = assemble_batch(
        prompt_ids=torch.tensor([[5, 6], [7, 8]]),
        prompt_mask=prompt_mask,
        response_ids=torch.tensor([[9, 4], [3, 2]]),
        response_mask=response_mask,
        rollout_logp=torch.tensor([[-0.5, -9.0], [-0.25, -0.75]]),
        completions=["x", "yz"],
        truncated=torch.tensor([False, True]),
        rows=[0, 0],
        prompts=["p"],
        answers=["a"],
        prompt_index=[4],
        seeds=[11, 12],
        policy_version=3,
        group_id_start=20,
        pad_token_id=0,
        device=torch.device("cpu"),
    )
    assert batch.prompt_ids.tolist() == [[0, 6], [7, 8]]
    assert batch.response_ids.tolist() == [[9, 0], [3, 2]]
    assert batch.rollout_logp.tolist() == [[-0.5, 0.0], [-0.25, -0.75]]
    assert torch.equal(batch.prompt_mask, prompt_mask) and torch.equal(batch.response_mask, response_mask)
    assert batch.policy_version.tolist() == [3, 3]
    assert batch.seeds.tolist() == [11, 12]
    assert batch.group_ids.tolist() == [20, 20]
    assert batch.prompt_index.tolist() == [4, 4]
    assert batch.prompts == ["p", "p"] and batch.answers == ["a", "a"]
    assert batch.completions == ["x", "yz"]
    assert batch.truncated.tolist() == [False, True]
