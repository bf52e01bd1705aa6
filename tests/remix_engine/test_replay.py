"""ReplayBuffer: FIFO over the last N steps, whole-group sampling, exact state round trip."""

import pytest
import torch

from remix_engine.batch import RolloutBatch
from remix_engine.replay import ReplayBuffer


def make_batch(step: int, groups: int = 3, group_size: int = 2, resp_len: int = 4) -> RolloutBatch:
    n = groups * group_size
    return RolloutBatch(
        prompt_ids=torch.arange(n * 2).reshape(n, 2),
        prompt_mask=torch.ones(n, 2, dtype=torch.bool),
        response_ids=torch.full((n, resp_len), step),
        response_mask=torch.ones(n, resp_len, dtype=torch.bool),
        rollout_logp=torch.full((n, resp_len), -1.0),
        policy_version=torch.full((n,), step),
        seeds=torch.arange(n),
        group_ids=torch.arange(groups).repeat_interleave(group_size) + 100 * step,
        prompt_index=torch.arange(groups).repeat_interleave(group_size),
        completions=[f"s{step}-{i}" for i in range(n)],
        answers=["1"] * n,
        prompts=["p"] * n,
        behavior_logp=torch.full((n, resp_len), -1.5),
        advantages=torch.randn(n, resp_len),
        rewards=torch.zeros(n),
        old_logp=torch.zeros(n, resp_len),
    )


def test_keeps_only_last_n_steps():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    for step in (1, 2, 3):
        buf.add(step, make_batch(step))
    assert buf.steps == [2, 3]
    assert len(buf) == 12
    assert buf.num_groups == 6


def test_sample_returns_whole_groups_with_behavior_data():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    buf.add(1, make_batch(1))
    buf.add(2, make_batch(2))
    out = buf.sample(4, torch.Generator().manual_seed(0))
    assert out is not None and len(out) == 8
    for gid in out.group_ids.unique():
        assert int((out.group_ids == gid).sum()) == 2  # a group is never split
    assert bool(out.is_replay.all())
    assert set(out.policy_version.tolist()) <= {1, 2}
    assert torch.equal(out.behavior_logp, torch.full_like(out.behavior_logp, -1.5))
    assert out.old_logp is None  # step-local tensors are recomputed on reuse
    assert buf.total_replayed == 8


def test_sample_is_capped_by_contents_and_empty_buffer_gives_none():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    gen = torch.Generator().manual_seed(0)
    assert buf.sample(3, gen) is None
    buf.add(1, make_batch(1, groups=2))
    assert len(buf.sample(10, gen)) == 4


def test_sampling_is_uniform_over_stored_policies():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    buf.add(1, make_batch(1, groups=10))
    buf.add(2, make_batch(2, groups=10))
    gen = torch.Generator().manual_seed(1)
    versions = torch.cat([buf.sample(4, gen).policy_version for _ in range(400)])
    share = float((versions == 1).float().mean())
    assert 0.45 < share < 0.55


def test_clear_and_state_round_trip():
    buf = ReplayBuffer(history_window=3, pad_token_id=0)
    buf.add(1, make_batch(1))
    buf.add(2, make_batch(2, resp_len=6))
    buf.sample(2, torch.Generator().manual_seed(0))
    restored = ReplayBuffer(history_window=1, pad_token_id=0)
    restored.load_state_dict(buf.state_dict())
    assert restored.steps == [1, 2] and restored.total_replayed == buf.total_replayed
    a = buf.sample(3, torch.Generator().manual_seed(5))
    b = restored.sample(3, torch.Generator().manual_seed(5))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.advantages, b.advantages)
    buf.clear()
    assert len(buf) == 0 and buf.sample(1, torch.Generator()) is None


def test_rejects_data_that_cannot_be_corrected():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    batch = make_batch(1)
    batch.behavior_logp = None
    with pytest.raises(ValueError, match="behavior_logp"):
        buf.add(1, batch)
    with pytest.raises(ValueError):
        ReplayBuffer(history_window=0, pad_token_id=0)


def test_rows_stay_aligned_when_batches_without_them_are_joined():
    # Replayed batches saved before rows existed (an older checkpoint) join fresh batches that have them.
    fresh = make_batch(2)
    fresh.rows = [{"prompt": "p", "label": i} for i in range(len(fresh))]
    old = RolloutBatch.from_state_dict({k: v for k, v in make_batch(1).state_dict().items() if k != "rows"})
    assert old.rows == []
    joined = RolloutBatch.concat([fresh, old], pad_token_id=0)
    assert len(joined.rows) == len(joined) == 12
    assert joined.rows[:6] == fresh.rows and joined.rows[6:] == [{}] * 6
    assert joined.select([5, 6]).rows == [fresh.rows[5], {}]


def test_replayed_responses_keep_their_truncated_flag_through_the_buffer_and_its_state():
    buf = ReplayBuffer(history_window=2, pad_token_id=0)
    batch = make_batch(1)
    batch.truncated = torch.tensor([True, False, False, True, False, False])
    buf.add(1, batch)
    restored = ReplayBuffer(history_window=2, pad_token_id=0)
    restored.load_state_dict(buf.state_dict())
    for source in (buf, restored):
        sampled = source.sample(3, torch.Generator().manual_seed(0))
        flags = {text: bool(flag) for text, flag in zip(sampled.completions, sampled.truncated, strict=True)}
        assert flags == {f"s1-{i}": i in (0, 3) for i in range(6)}


def test_a_batch_stored_before_the_flag_existed_joins_as_not_truncated():
    old, new = make_batch(1), make_batch(2)  # `old` has no flag, as in a checkpoint from before it
    new.truncated = torch.ones(len(new), dtype=torch.bool)
    joined = RolloutBatch.concat([old, new], pad_token_id=0)
    assert joined.truncated.tolist() == [False] * len(old) + [True] * len(new)
    assert joined.loss_mask(exclude_truncated=True).sum() == 0 + old.response_mask.sum()
    assert torch.equal(joined.loss_mask(), joined.response_mask)


def _with_ref(batch: RolloutBatch, value: float) -> RolloutBatch:
    batch.ref_logp = torch.full(batch.response_ids.shape, value)
    return batch


def test_anchor_log_probs_come_back_only_under_the_anchor_they_were_computed_under():
    buf = ReplayBuffer(history_window=3, pad_token_id=0)
    buf.add(1, _with_ref(make_batch(1, resp_len=3), -0.5), anchor_version=0)
    buf.add(2, _with_ref(make_batch(2, resp_len=5), -0.7), anchor_version=1)
    same = buf.sample(6, torch.Generator().manual_seed(0), anchor_version=1)
    assert same is not None and same.ref_logp is not None
    from_step_2 = same.policy_version == 2
    assert torch.all(same.ref_logp[from_step_2] == -0.7)
    assert torch.isnan(same.ref_logp[~from_step_2, :3]).all()  # computed under another anchor: unknown
    moved = buf.sample(6, torch.Generator().manual_seed(0), anchor_version=2)
    assert moved is not None and moved.ref_logp is None  # nothing valid under the new anchor
    unversioned = ReplayBuffer(history_window=3, pad_token_id=0)
    unversioned.add(1, _with_ref(make_batch(1), -0.5))  # no anchor named: nothing kept
    sampled = unversioned.sample(3, torch.Generator().manual_seed(0), anchor_version=0)
    assert sampled is not None and sampled.ref_logp is None


def test_anchor_versions_survive_the_state_and_an_older_state_loads_without_them():
    buf = ReplayBuffer(history_window=3, pad_token_id=0)
    buf.add(1, _with_ref(make_batch(1), -0.5), anchor_version=4)
    restored = ReplayBuffer(history_window=1, pad_token_id=0)
    restored.load_state_dict(buf.state_dict())
    sampled = restored.sample(3, torch.Generator().manual_seed(0), anchor_version=4)
    assert sampled is not None and sampled.ref_logp is not None and torch.all(sampled.ref_logp == -0.5)
    older = buf.state_dict()
    del older["anchor_versions"]  # what a buffer saved before anchor versions holds
    old = ReplayBuffer(history_window=1, pad_token_id=0)
    old.load_state_dict(older)
    sampled = old.sample(3, torch.Generator().manual_seed(0), anchor_version=0)
    assert sampled is not None and sampled.ref_logp is None and len(sampled) == 6
