"""The step's mixed batch: replayed rows bring the anchor log-probs the replay buffer kept under the same
anchor, only the other rows are scored, and a moved anchor invalidates what was kept."""

from __future__ import annotations

import pytest
import torch
from step_pieces import prepare_fresh, reference_batch, scored_rollout

from remix_engine.batch import RolloutBatch
from remix_engine.config import TrainConfig
from remix_engine.trainer import Trainer


@pytest.fixture()
def trained(random_model_dir: str, tmp_path) -> Trainer:
    """Two Mix-phase steps taken: the buffer holds both steps' rows with their anchor log-probs."""
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": random_model_dir},
            "data": {"eval_size": 8},
            "rollout": {"prompts_per_step": 5, "group_size": 2, "max_new_tokens": 8},
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            "algorithm": {"off_policy_fraction": 0.4, "reincarnation_step": 10, "minibatch_size": 6, "kl_coef": 0.1},
            "optim": {"lr": 1e-3},
            "total_steps": 4,
            "seed": 3,
        }
    )
    trainer = Trainer(cfg, tmp_path)
    trainer.train_step()
    trainer.train_step()
    return trainer


def _replay(trainer: Trainer) -> RolloutBatch:
    replay = trainer.buffer.sample(2, torch.Generator().manual_seed(0), anchor_version=trainer.learner.anchor_version)
    assert replay is not None
    return replay


def test_kept_anchor_log_probs_equal_recomputed_ones(trained: Trainer) -> None:
    replay = _replay(trained)
    assert replay.ref_logp is not None and not torch.isnan(replay.ref_logp).any()
    recomputed = trained.learner.logprobs(trained.ref_model, replay)
    torch.testing.assert_close(replay.ref_logp, recomputed, atol=1e-5, rtol=1e-5)


def test_the_mixed_batch_scores_only_rows_without_kept_anchor_log_probs(trained: Trainer) -> None:
    replay = _replay(trained)
    assert replay.ref_logp is not None
    marker = torch.where(replay.response_mask, -123.0, 0.0)  # no model gives this: it shows what was reused
    replay.ref_logp = marker.clone()
    fresh = prepare_fresh(trained, scored_rollout(trained, 3, 3))
    batch = reference_batch(trained, fresh, replay, lam=1.0)
    assert batch.ref_logp is not None and batch.ref_logp.shape == batch.response_ids.shape
    n, width = len(fresh), marker.shape[1]
    assert torch.equal(batch.ref_logp[n:, :width], marker)
    assert torch.all(batch.ref_logp[n:, width:] == 0)
    torch.testing.assert_close(
        batch.ref_logp[:n], trained.learner.logprobs(trained.ref_model, batch.select(list(range(n)))), atol=1e-5, rtol=0
    )


def test_a_moved_anchor_invalidates_the_kept_log_probs(trained: Trainer) -> None:
    kept = _replay(trained).ref_logp
    trained.learner.anchor_to_current(reset_optimizer=False)  # the buffer is not emptied here
    replay = _replay(trained)
    assert replay.ref_logp is None
    fresh = prepare_fresh(trained, scored_rollout(trained, 3, 3))
    batch = reference_batch(trained, fresh, replay, lam=1.0)
    assert batch.ref_logp is not None and kept is not None
    replayed = batch.ref_logp[len(fresh) :, : kept.shape[1]]
    torch.testing.assert_close(replayed, trained.learner.logprobs(trained.ref_model, replay), atol=1e-5, rtol=0)
    assert not torch.allclose(replayed, kept, atol=1e-4)  # the policy moved in two steps, and the anchor with it
