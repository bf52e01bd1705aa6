"""Trainer: phases, replay mix, reincarnation, exact resume, PPO path, long responses (truncation and
reward.overlong), and that ReMix learns."""

import copy

import pytest
import torch
from step_pieces import prepare_fresh, reference_batch, scored_rollout, trainable, update

from remix_engine.callbacks import NullCallbacks
from remix_engine.config import TINY_MODEL_ID, TrainConfig
from remix_engine.trainer import Trainer


class Recorder(NullCallbacks):
    def __init__(self):
        self.steps, self.events, self.checkpoints = [], [], []

    def on_step(self, step, metrics):
        self.steps.append(dict(metrics))

    def on_event(self, kind, step, message, payload):
        self.events.append((kind, step, message, payload))

    def on_checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, path))

    def should_stop(self):
        return False


def small_config(model_path, **algorithm):
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_path},
            "data": {"eval_size": 8},
            "rollout": {"prompts_per_step": 5, "group_size": 2, "max_new_tokens": 6},
            # An untrained model never boxes an answer; rewarding any digit gives rewards with variance.
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            "algorithm": {
                "off_policy_fraction": 0.4,
                "history_window": 2,
                "utd_ratio": 2,
                "reincarnation_step": 2,
                "lambda_start_step": 1,
                "lambda_interval": 1,
                "minibatch_size": 6,
                **algorithm,
            },
            "optim": {"lr": 1e-3},
            "total_steps": 3,
            "checkpoint_every": 2,
            "seed": 7,
        }
    )


def test_mix_phase_replays_then_reincarnation_goes_on_policy(random_model_dir, tmp_path):
    rec = Recorder()
    trainer = Trainer(small_config(random_model_dir), tmp_path, callbacks=rec)
    result = trainer.train()
    first, second, third = rec.steps
    assert [m["phase"] for m in rec.steps] == ["mix", "mix", "on-policy"]
    # Step 1: the buffer is empty, so the whole batch is fresh.
    assert first["replayed_samples"] == 0 and first["fresh_samples"] == 10
    # Step 2: round(0.4 * 5) = 2 groups of 2 replayed, 3 fresh groups.
    assert second["replayed_samples"] == 4 and second["fresh_samples"] == 6
    assert third["replayed_samples"] == 0 and third["fresh_samples"] == 10
    assert [m["fresh_rollouts_total"] for m in rec.steps] == [10, 16, 26]
    assert [m["lambda"] for m in rec.steps] == [1.0, 0.9, 0.8]
    kinds = [e[0] for e in rec.events]
    assert ("reincarnated", 2) in [(e[0], e[1]) for e in rec.events]
    assert kinds.count("checkpoint") == 2 and result.final_step == 3
    assert trainer.reincarnated_at == 2 and len(trainer.buffer) == 0


def test_reincarnation_moves_anchor_to_current_policy(random_model_dir, tmp_path):
    trainer = Trainer(small_config(random_model_dir), tmp_path)
    base = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.train_step()
    trainer.train_step()  # step 2 == T: reincarnates at its end
    assert len(trainer.buffer) == 0
    for name, value in trainer.ref_model.state_dict().items():
        assert torch.equal(value, trainer.policy.state_dict()[name])
    assert any(not torch.equal(base[k], v) for k, v in trainer.ref_model.state_dict().items())


def test_fresh_data_has_unit_ratio_and_clip_centre(random_model_dir, tmp_path):
    trainer = Trainer(small_config(random_model_dir), tmp_path)
    fresh = scored_rollout(trainer, 1, 3)
    prepare_fresh(trainer, fresh)
    batch = reference_batch(trainer, fresh, None, lam=1.0)
    recomputed = trainer.learner.logprobs(trainer.policy, batch)
    assert torch.equal(batch.old_logp, recomputed)  # pi_k of fresh rows is their behaviour policy
    assert torch.equal(batch.ref_logp, recomputed)  # anchor == base == policy at step 1
    # The rollout engine's own log-probs agree with the learner's.
    diff = (fresh.rollout_logp - fresh.behavior_logp).abs() * fresh.response_mask
    assert float(diff.max()) < 1e-4


def test_inactive_kl_terms_skip_their_pass_without_changing_the_update(random_model_dir, tmp_path):
    logged = Trainer(small_config(random_model_dir), tmp_path / "logged")
    lean = Trainer(small_config(random_model_dir, log_inactive_kl=False), tmp_path / "lean")
    assert lean.alg.lambda_at(1) == 1.0
    a, b = logged.train_step(), lean.train_step()
    assert "kl_prev" in a and "kl_prev" not in b  # precedent weight (1 - lambda) is 0: not computed
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-7)
    for (name, p), q in zip(logged.policy.named_parameters(), lean.policy.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


class _SeparateScoringPasses(Trainer):
    def pi_k_in_first_forward(self, batch_rows):
        return False


def _assert_same_training(lean, full):
    for (name, p), q in zip(lean.policy.named_parameters(), full.policy.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_single_on_policy_pass_reuses_the_learner_forward_for_pi_k(random_model_dir, tmp_path):
    cfg = small_config(random_model_dir, name="grpo", minibatch_size=64)  # one minibatch: one pass
    lean = Trainer(cfg, tmp_path / "lean")
    full = _SeparateScoringPasses(cfg, tmp_path / "full")
    a, b = lean.train_step(), full.train_step()
    assert lean.train_step()["step"] == 2  # and the next step runs as well
    full.train_step()
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-7)
    assert a["clip_frac"] == b["clip_frac"] == 0.0  # ratios are exactly 1 on the first pass
    assert a["rollout_logp_mismatch_max"] == pytest.approx(b["rollout_logp_mismatch_max"], abs=1e-6)
    _assert_same_training(lean, full)


@pytest.mark.parametrize("name", ["remix-grpo", "remix-ppo"])
def test_mixed_batch_in_one_minibatch_takes_pi_k_from_the_first_forward(random_model_dir, tmp_path, name):
    # One minibatch holds fresh + replayed rows; m = 2 passes, so the second pass has real ratios.
    cfg = small_config(random_model_dir, name=name, minibatch_size=64, reincarnation_step=5)
    lean = Trainer(cfg, tmp_path / "lean")
    full = _SeparateScoringPasses(cfg, tmp_path / "full")
    assert lean.pi_k_in_first_forward(10) and not full.pi_k_in_first_forward(10)
    for _ in range(3):
        a, b = lean.train_step(), full.train_step()
        for key in ("loss", "pg_loss", "kl_ref", "clip_frac", "rollout_logp_mismatch_max"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
        _assert_same_training(lean, full)
    assert a["replayed_samples"] == 4
    # What the buffer keeps for replay is the same: real behaviour log-probs, never the NaN placeholder.
    kept_steps, expected_steps = lean.buffer.state_dict()["entries"], full.buffer.state_dict()["entries"]
    assert len(kept_steps) == 2
    for (_, kept), (_, expected) in zip(kept_steps, expected_steps, strict=True):
        assert not torch.isnan(kept["behavior_logp"]).any()
        torch.testing.assert_close(kept["behavior_logp"], expected["behavior_logp"], atol=1e-6, rtol=0)


def test_without_kl_no_anchor_pass_is_made(random_model_dir, tmp_path):
    trainer = Trainer(small_config(random_model_dir, kl_coef=0.0, log_inactive_kl=False), tmp_path)
    for _ in range(2):
        metrics = trainer.train_step()
        assert metrics["kl_loss"] == 0.0 and "kl_ref" not in metrics and "kl_prev" not in metrics


def test_every_parameter_changes_and_loss_is_finite(random_model_dir, tmp_path):
    trainer = Trainer(small_config(random_model_dir), tmp_path)
    before = {k: v.clone() for k, v in trainer.policy.named_parameters()}
    metrics = trainer.train_step()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    unchanged = [k for k, v in trainer.policy.named_parameters() if torch.equal(before[k], v)]
    assert unchanged == []


def test_resume_gives_identical_next_step(random_model_dir, tmp_path):
    cfg = small_config(random_model_dir, reincarnation_step=5)
    straight = Trainer(cfg, tmp_path / "a")
    straight.train_step()
    straight.train_step()
    path = straight.save_checkpoint()
    expected = straight.train_step()

    resumed = Trainer(cfg, tmp_path / "b")
    resumed.resume(path)
    assert resumed.step == 2
    got = resumed.train_step()
    for key in ("loss", "pg_loss", "kl_ref", "kl_prev", "reward_mean", "replayed_samples", "clip_frac"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    for name, value in resumed.policy.state_dict().items():
        torch.testing.assert_close(value, straight.policy.state_dict()[name], atol=1e-6, rtol=0)


def test_baseline_grpo_never_replays(random_model_dir, tmp_path):
    rec = Recorder()
    Trainer(small_config(random_model_dir, name="grpo"), tmp_path, callbacks=rec).train()
    assert all(m["replayed_samples"] == 0 and m["phase"] == "on-policy" for m in rec.steps)
    assert "reincarnated" not in [e[0] for e in rec.events]


@pytest.mark.parametrize("name", ["remix-ppo", "ppo"])
def test_ppo_trains_a_critic(random_model_dir, tmp_path, name):
    trainer = Trainer(small_config(random_model_dir, name=name), tmp_path)
    critic_before = {k: v.clone() for k, v in trainer.critic.named_parameters()}
    trainer.train_step()
    metrics = trainer.train_step()
    assert "value_loss" in metrics and torch.isfinite(torch.tensor(metrics["value_loss"]))
    assert any(not torch.equal(critic_before[k], v) for k, v in trainer.critic.named_parameters())
    if name == "remix-ppo":
        assert metrics["replayed_samples"] == 4


@pytest.mark.slow
def test_remix_grpo_raises_toy_accuracy(tmp_path):
    """On the pretrained tiny model, ReMix-GRPO lifts held-out greedy accuracy by >= 15 points."""
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": TINY_MODEL_ID},
            "data": {"eval_size": 200},
            "rollout": {"prompts_per_step": 64, "group_size": 8, "max_new_tokens": 16},
            "algorithm": {
                "name": "remix-grpo",
                "reincarnation_step": 15,
                "lambda_start_step": 15,
                "minibatch_size": 512,
            },
            "optim": {"lr": 1e-4},
            "total_steps": 30,
            "checkpoint_every": 30,
            "seed": 0,
        }
    )
    result = Trainer(cfg, tmp_path).train()
    gain = result.eval_after["accuracy"] - result.eval_before["accuracy"]
    assert gain >= 0.15, (result.eval_before, result.eval_after)


class _StopAfter(Recorder):
    """Asks to stop once `steps` steps are done; answers `checkpoint_on_stop` with `checkpoint`."""

    def __init__(self, steps, checkpoint):
        super().__init__()
        self.stop_after, self.checkpoint, self.asked = steps, checkpoint, 0

    def should_stop(self):
        return len(self.steps) >= self.stop_after

    def checkpoint_on_stop(self):
        self.asked += 1
        return self.checkpoint


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_stop_saves_the_step_reached_only_when_asked(random_model_dir, tmp_path, checkpoint):
    cfg = small_config(random_model_dir).model_copy(update={"total_steps": 10, "checkpoint_every": 5})
    callbacks = _StopAfter(2, checkpoint)
    result = Trainer(cfg, tmp_path, callbacks=callbacks).train()
    assert result.stopped and result.final_step == 2 and callbacks.asked == 1
    if checkpoint:
        assert result.last_checkpoint is not None and result.last_checkpoint.name == "step-000002"
        assert [step for step, _ in callbacks.checkpoints] == [2]
        assert Trainer.latest_checkpoint(tmp_path) == result.last_checkpoint
    else:
        assert result.last_checkpoint is None and callbacks.checkpoints == []


def test_rewards_see_the_row_and_each_reward_is_a_step_metric(random_model_dir, tmp_path):
    import json

    from remix_engine.rewards import compose_rewards, reward_row

    # A dataset with a column beyond prompt and answer; only some rows have it.
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), **({"unit": "1"} if a % 2 else {})}
            for a, b in [(11, 22), (12, 30), (13, 40), (24, 15), (35, 26), (46, 17)]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    functions = [
        {"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}},
        {"name": "string_check", "weight": 0.5, "kwargs": {"operation": "contains", "field": "unit"}},
        # Reads the row's column; fails (KeyError) on the rows without it.
        {"name": "python", "weight": 2.0,
         "kwargs": {"code": "def reward(completion, answer, row):\n    return float(row['unit'] in completion)\n"}},
    ]
    cfg = small_config(random_model_dir, name="grpo").model_copy(
        update={
            "data": TrainConfig.model_validate({"data": {"train_path": str(data), "eval_size": 2}}).data,
            "reward": TrainConfig.model_validate({"reward": {"functions": functions}}).reward,
            "total_steps": 2,
            "log_completions": 64,
        }
    )
    rec = Recorder()
    Trainer(cfg, tmp_path / "out", callbacks=rec).train()
    samples = [e[3]["samples"] for e in rec.events if e[0] == "samples"]
    assert len(samples) == 2
    by_prompt = {
        row["prompt"]: reward_row(row["prompt"], {k: v for k, v in row.items() if k not in ("prompt", "answer")})
        for row in rows
    }
    for metrics, step_samples in zip(rec.steps, samples, strict=True):
        completions = [s["completion"] for s in step_samples]
        answers = [s["answer"] for s in step_samples]
        sample_rows = [by_prompt[s["prompt"]] for s in step_samples]
        _, per_fn = compose_rewards(cfg.reward.functions, completions, answers, sample_rows)
        missing = [float("unit" not in row) for row in sample_rows]
        assert 0 < sum(missing) < len(missing)  # the step saw rows with and without the column
        for name in ("regex", "string_check", "python"):
            assert metrics[f"reward/{name}/mean"] == pytest.approx(sum(per_fn[name]) / len(completions)), name
        assert metrics["reward/regex/error_rate"] == 0.0
        assert metrics["reward/string_check/error_rate"] == pytest.approx(sum(missing) / len(missing))
        assert metrics["reward/python/error_rate"] == pytest.approx(sum(missing) / len(missing))
        assert metrics["reward_errors"] == 2 * sum(missing)
        assert metrics["accuracy"] == pytest.approx(metrics["reward/regex/mean"])  # the first reward is binary
        weighted = sum(
            spec.weight * metrics[f"reward/{spec.name}/mean"] for spec in cfg.reward.functions
        )
        assert metrics["reward_mean"] == pytest.approx(weighted, abs=1e-6)


# ---------------------------------------------------------------------------------- long responses

# The untrained model rarely samples EOS: with these stop strings about 4 in 10 of its 6-token responses
# end on a digit and the others are truncated.
DIGIT_STOPS = ["0", "1", "2", "3", "4", "5", "6", "7"]
ANY_TEXT = {"functions": [{"name": "regex", "kwargs": {"pattern": ".", "target": "completion"}}]}


def long_response_config(model_path, overlong, **algorithm):
    data = small_config(model_path, **algorithm).model_dump(mode="json")
    data["rollout"]["stop"] = DIGIT_STOPS
    data["reward"] = {**ANY_TEXT, "overlong": overlong}
    return TrainConfig.model_validate(data)


def test_truncated_fraction_counts_the_fresh_responses_that_hit_max_new_tokens(random_model_dir, tmp_path):
    trainer = Trainer(long_response_config(random_model_dir, "keep"), tmp_path)
    fresh = scored_rollout(trainer, 1, 5)
    assert fresh.truncated is not None and 0 < int(fresh.truncated.sum()) < len(fresh)
    eos = trainer.tokenizer.eos_token_id
    rows = zip(fresh.truncated.tolist(), fresh.response_ids, fresh.response_mask, fresh.completions, strict=True)
    for truncated, ids, mask, text in rows:
        ended = text[-1:] in DIGIT_STOPS or ids[mask][-1] == eos  # on a stop string or on EOS
        assert truncated == (not ended)
        assert int(mask.sum()) == 6 or not truncated  # a truncated response has all of max_new_tokens
    rec = Recorder()
    metrics = Trainer(long_response_config(random_model_dir, "keep"), tmp_path / "again", callbacks=rec).train_step()
    assert metrics["truncated_fraction"] == pytest.approx(float(fresh.truncated.float().mean()))
    (samples,) = [payload["samples"] for kind, _, _, payload in rec.events if kind == "samples"]
    assert [s["truncated"] for s in samples] == fresh.truncated.tolist()[: len(samples)]  # shown with each sample


@pytest.mark.parametrize("overlong", ["keep", "zero", "mask"])
def test_overlong_zero_sets_the_reward_of_truncated_responses_to_zero(random_model_dir, tmp_path, overlong):
    fresh = scored_rollout(Trainer(long_response_config(random_model_dir, overlong), tmp_path), 1, 5)
    truncated = fresh.truncated
    assert 0 < int(truncated.sum()) < len(fresh)
    assert fresh.rewards[~truncated].tolist() == [1.0] * int((~truncated).sum())  # any text scores 1
    expected = 0.0 if overlong == "zero" else 1.0
    assert fresh.rewards[truncated].tolist() == [expected] * int(truncated.sum())
    assert bool(fresh.correct.all())  # accuracy stays as scored


def _step_batch(trainer):
    """The step-1 batch of `trainer` as the learner sees it, one response of each pair truncated."""
    fresh = scored_rollout(trainer, 1, trainer.cfg.rollout.prompts_per_step)
    fresh.truncated = torch.tensor([True, False] * (len(fresh) // 2))
    prepare_fresh(trainer, fresh)
    return reference_batch(trainer, fresh, None, lam=1.0)


def _parameters_after_update(trainer, batch):
    """Policy (and critic) parameters after one learner update on `batch` from the current weights, restored after.

    Plain SGD: Adam's first step is about lr * sign(gradient), blind to most changes of the gradient."""
    saved = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    critic = None if trainer.critic is None else {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    trainer.learner.optimizer = torch.optim.SGD(trainable(trainer.policy), lr=1.0)
    if trainer.critic is not None:
        trainer.learner.critic_optimizer = torch.optim.SGD(trainable(trainer.critic), lr=1.0)
    trainer.generator.manual_seed(0)
    update(trainer, batch, 1.0, epochs=1)
    after = {f"policy.{k}": v.clone() for k, v in trainer.policy.state_dict().items()}
    if trainer.critic is not None:
        after |= {f"critic.{k}": v.clone() for k, v in trainer.critic.state_dict().items()}
        trainer.critic.load_state_dict(critic)
    trainer.policy.load_state_dict(saved)
    return after


def _scrambled_truncated_rows(batch):
    """A copy of `batch` whose truncated rows have other advantages, KL anchors and value targets
    (small changes: a ratio or a KL pushed past its clip would have no gradient to change)."""
    changed = copy.deepcopy(batch)
    rows = changed.truncated
    changed.advantages[rows] += 1.0
    for name, shift in (("ref_logp", 0.1), ("prev_logp", -0.1), ("returns", 0.5)):
        value = getattr(changed, name)
        if value is not None:
            value[rows] += shift
    return changed


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_overlong_mask_leaves_truncated_responses_out_of_the_update(random_model_dir, tmp_path, name):
    # given the same batch twice, once with everything the loss reads on its truncated rows changed
    masked = Trainer(long_response_config(random_model_dir, "mask", name=name, minibatch_size=64), tmp_path / "m")
    batch = _step_batch(masked)
    reference = _parameters_after_update(masked, batch)
    scrambled = _parameters_after_update(masked, _scrambled_truncated_rows(batch))
    # then the policy (and critic) update is bit for bit the same with reward.overlong: mask
    assert [k for k in reference if not torch.equal(reference[k], scrambled[k])] == []
    assert [k for k in reference if not torch.equal(reference[k], _parameters_after_update(masked, batch)[k])] == []

    # while with reward.overlong: keep the truncated rows do train
    kept = Trainer(long_response_config(random_model_dir, "keep", name=name, minibatch_size=64), tmp_path / "k")
    batch = _step_batch(kept)
    reference = _parameters_after_update(kept, batch)
    scrambled = _parameters_after_update(kept, _scrambled_truncated_rows(batch))
    assert [k for k in reference if not torch.equal(reference[k], scrambled[k])] != []


def test_overlong_mask_keeps_truncated_rewards_in_their_group_statistics(random_model_dir, tmp_path):
    # DAPO's overlong filtering: the loss skips a truncated response, its group's GRPO mean and std do not.
    trainer = Trainer(long_response_config(random_model_dir, "mask", name="grpo"), tmp_path)
    fresh = scored_rollout(trainer, 1, 5)
    fresh.truncated = torch.tensor([True, False] * 5)
    fresh.rewards = torch.tensor([0.0, 1.0] * 5)
    prepare_fresh(trainer, fresh)
    completed = fresh.advantages[~fresh.truncated].amax(dim=1)  # (5,) one per group
    assert completed.tolist() == pytest.approx([0.7071061] * 5, abs=1e-5)  # (1 - 0.5) / (std 0.7071 + eps)


def test_a_step_reports_where_its_seconds_went(random_model_dir, tmp_path):
    trainer = Trainer(small_config(random_model_dir), tmp_path)
    trainer.train_step()
    metrics = trainer.train_step()  # a Mix-phase step with replayed rows
    parts = ["generation", "scoring", "behaviour_logprobs", "replay", "reference_logprobs", "learner", "policy_sync"]
    seconds = {part: metrics[f"time_{part}_s"] for part in parts}
    assert all(value > 0 for value in seconds.values()), seconds
    assert sum(seconds.values()) <= metrics["step_s"]
    assert metrics["rollout_s"] == pytest.approx(seconds["generation"] + seconds["scoring"])
    assert metrics["learner_s"] == pytest.approx(sum(seconds.values()) - metrics["rollout_s"])
    # Token counts for usage accounting: responses generated, and response tokens trained on per pass.
    assert metrics["generated_tokens"] == round(metrics["response_length_fresh"] * metrics["fresh_samples"])
    replayed = metrics["response_length_replay"] * metrics["replayed_samples"]
    passes = trainer.alg.utd_ratio * trainer.alg.ppo_epochs
    assert metrics["trained_tokens"] == round(passes * (metrics["generated_tokens"] + replayed))


def test_length_bucketed_micro_batches_train_as_whole_minibatches(random_model_dir, tmp_path):
    runs = []
    for budget in (None, 40):  # 40 padded tokens: about two rows per forward pass
        trainer = Trainer(small_config(random_model_dir, micro_batch_tokens=budget), tmp_path / str(budget))
        runs.append((trainer, [trainer.train_step() for _ in range(3)]))  # replay at 2, reincarnation at 2
    (whole, whole_steps), (bucketed, bucketed_steps) = runs
    for a, b in zip(whole_steps, bucketed_steps, strict=True):
        assert set(a) == set(b)
        for key, value in a.items():
            if isinstance(value, (int, float)) and not key.endswith("_s"):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # Adam divides by the gradient's own size, so float noise in a near-zero gradient moves a weight by a
    # visible part of a step (lr 1e-3): the weights agree to a tenth of one step.
    for p, q in zip(whole.policy.parameters(), bucketed.policy.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4)


def test_a_checkpoint_from_before_anchor_versions_resumes_and_scores_replay(random_model_dir, tmp_path):
    from remix_engine import checkpoint as ckpt
    from remix_engine.trainer_state import restore_state

    cfg = small_config(random_model_dir, reincarnation_step=5)
    straight = Trainer(cfg, tmp_path / "a")
    straight.train_step()
    straight.train_step()
    path = straight.save_checkpoint()
    state = ckpt.load_trainer_state(path)
    state.pop("anchor_version")
    state["replay"].pop("anchor_versions")
    for _, rows in state["replay"]["entries"]:
        rows["ref_logp"] = None  # what the buffer stored before it kept anchor log-probs
    resumed = Trainer(cfg, tmp_path / "b")
    progress = restore_state(state, path, resumed.learner, resumed.buffer, resumed.sampler, resumed.generator)
    resumed.step, resumed.fresh_rollouts = progress.step, progress.fresh_rollouts
    assert resumed.learner.anchor_version == 0
    replay = resumed.buffer.sample(2, torch.Generator().manual_seed(0), anchor_version=0)
    assert replay is not None and replay.ref_logp is None  # nothing kept: the step scores them
    expected, got = straight.train_step(), resumed.train_step()
    for key in ("loss", "kl_ref", "pg_loss"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
