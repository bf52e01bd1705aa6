"""Trainer wiring: what the real trainer hands its optimizer and loss terms, step by step.

Each test pins one connection in trainer.py that a one-line slip could break while every other trainer
test stays green: how many optimizer steps a step takes (UTD m in the Mix phase, ppo_epochs after T),
the sign of every term of the total loss, which weights the precedent policy pi_{t-1} and the anchor
hold when their log-probs are taken, the clip centre pi_k/pi_behaviour of replayed rows, and (PPO) the
centre of the replayed rows' value clip.

The loss terms are observed where the learner's update calls them: `remix_engine.policy_update`'s
`POLICY_LOSSES`, `kl_convex_loss` and `value_loss` are wrapped by spies that record their inputs and call
the real function, and its `_minibatch` is wrapped to keep each minibatch (the rows those inputs belong to).
The expected values are recomputed independently, from copies of the policy and critic taken before
each step.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_trainer import small_config

import remix_engine.policy_update as update_module
from remix_engine.config import TrainConfig
from remix_engine.modeling import sequence_logprobs
from remix_engine.trainer import Trainer

ATOL = 1e-5  # the same weights scoring the same rows in a differently padded batch


def wiring_config(model_path: str, **algorithm) -> TrainConfig:
    """5 prompts x 2 responses = 10 rows a step; from step 2 on, 3 fresh groups + 2 replayed (4 rows).

    A large learning rate makes successive policies (and critics) clearly different, so a model
    holding the wrong weights gives clearly different log-probs (or values).
    """
    # test_trainer's small job (5 x 2 rows, two minibatches of 6), with the larger learning rates above.
    config = small_config(model_path, **algorithm).model_dump(mode="json")
    config["optim"].update(lr=1e-2, critic_lr=1e-2)
    config["checkpoint_every"] = 3
    return TrainConfig.model_validate(config)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())


class Probe:
    """A private copy of the policy that scores minibatches under any saved weights."""

    def __init__(self, trainer: Trainer) -> None:
        self.model = copy.deepcopy(trainer.policy).eval()
        self.temperature = trainer.cfg.rollout.temperature

    @torch.no_grad()
    def logprobs(self, state: dict[str, torch.Tensor], mb) -> torch.Tensor:
        self.model.load_state_dict(state)
        logp, _ = sequence_logprobs(self.model, mb, temperature=self.temperature, with_entropy=False)
        return logp


def close_on(mask: torch.Tensor, got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |got - expected| over the valid tokens of `mask` (0 if there are none)."""
    mask = mask.bool()
    return float((got - expected).abs()[mask].max()) if bool(mask.any()) else 0.0


class Tap:
    """Per minibatch, in call order: the minibatch and what each loss term of the trainer received."""

    def __init__(self, trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.minibatches: list = []
        self.policy: list[dict] = []
        self.kl: list[dict] = []
        self.value: list[dict] = []

        real_minibatch = update_module._minibatch

        def minibatch(*args):
            mb, share = real_minibatch(*args)
            self.minibatches.append(mb)  # the update fills mb.old_logp in place on a first-forward pass
            return mb, share

        monkeypatch.setattr(update_module, "_minibatch", minibatch)

        real_losses, tap = update_module.POLICY_LOSSES, self

        class Losses:
            def get(self, name):
                real = real_losses.get(name)

                def spy(logp, old_logp, behavior_logp, advantages, mask, **knobs):
                    tap.policy.append(
                        {
                            "name": name,
                            "logp": logp.detach().clone(),
                            "old_logp": old_logp.detach().clone(),
                            "behavior_logp": behavior_logp.detach().clone(),
                            "mask": mask.clone(),
                        }
                    )
                    return real(logp, old_logp, behavior_logp, advantages, mask, **knobs)

                return spy

        monkeypatch.setattr(update_module, "POLICY_LOSSES", Losses())

        real_kl = update_module.kl_convex_loss

        def kl_spy(logp, ref_logp, prev_logp, mask, **knobs):
            self.kl.append(
                {
                    "ref_logp": None if ref_logp is None else ref_logp.detach().clone(),
                    "prev_logp": None if prev_logp is None else prev_logp.detach().clone(),
                    "mask": mask.clone(),
                    **knobs,
                }
            )
            return real_kl(logp, ref_logp, prev_logp, mask, **knobs)

        monkeypatch.setattr(update_module, "kl_convex_loss", kl_spy)

        real_value = update_module.value_loss

        def value_spy(values, old_values, returns, mask, **knobs):
            self.value.append(
                {"old_values": old_values.detach().clone(), "returns": returns.detach().clone(), "mask": mask.clone()}
            )
            return real_value(values, old_values, returns, mask, **knobs)

        monkeypatch.setattr(update_module, "value_loss", value_spy)

    def clear(self) -> None:
        for calls in (self.minibatches, self.policy, self.kl, self.value):
            calls.clear()


def counted_step(trainer: Trainer) -> tuple[dict, int, int]:
    """One training step and how many times the policy and the critic optimizers stepped in it."""
    counts = {"policy": 0, "critic": 0}

    def counter(which):
        def hook(*_):
            counts[which] += 1

        return hook

    # Hooks on the optimizers of this step (reincarnation may replace the policy's at its end).
    handles = [trainer.learner.optimizer.register_step_post_hook(counter("policy"))]
    if trainer.learner.critic_optimizer is not None:
        handles.append(trainer.learner.critic_optimizer.register_step_post_hook(counter("critic")))
    metrics = trainer.train_step()
    for handle in handles:
        handle.remove()
    return metrics, counts["policy"], counts["critic"]


# ---------------------------------------------------------------------------------------------- UTD


def test_mix_steps_make_utd_times_ppo_epochs_passes_and_on_policy_steps_ppo_epochs(random_model_dir, tmp_path):
    # m = 3 and ppo_epochs = 2 give distinct products; 10 rows in minibatches of 6 are 2 optimizer steps a pass.
    trainer = Trainer(wiring_config(random_model_dir, utd_ratio=3, ppo_epochs=2), tmp_path)
    seen = []
    for _ in range(3):
        metrics, policy_steps, _ = counted_step(trainer)
        seen.append((metrics["phase"], metrics["fresh_samples"] + metrics["replayed_samples"], policy_steps))
    assert seen == [
        ("mix", 10, 2 * 3 * 2),  # step 1: all fresh, ppo_epochs x m passes
        ("mix", 10, 2 * 3 * 2),  # step 2: 6 fresh + 4 replayed rows, still m passes
        ("on-policy", 10, 2 * 2),  # after T = 2: ppo_epochs passes only
    ]


def test_baselines_ignore_utd_and_step_the_critic_with_the_policy(random_model_dir, tmp_path):
    trainer = Trainer(wiring_config(random_model_dir, name="ppo", utd_ratio=3, ppo_epochs=2), tmp_path)
    metrics, policy_steps, critic_steps = counted_step(trainer)
    assert metrics["phase"] == "on-policy"
    assert policy_steps == critic_steps == 2 * 2  # ppo_epochs x minibatches; m is a Mix-phase knob


# ---------------------------------------------------------------------------------------- loss signs


def test_total_loss_is_pg_minus_entropy_bonus_plus_kl_convex(random_model_dir, tmp_path):
    # Coefficients large enough that a flipped term moves the total far beyond rounding.
    c, beta = 0.05, 0.5
    trainer = Trainer(wiring_config(random_model_dir, entropy_coef=c, kl_coef=beta), tmp_path)
    for _ in range(3):  # mix (lambda 1), mix (lambda 0.9, replay), on-policy after reincarnation (0.8)
        m = trainer.train_step()
        # Every logged term is the mean over the step's minibatches, like the total: the identity is linear.
        assert c * m["entropy"] > 0.05 and m["kl_loss"] > 0.01, m  # both terms are far from negligible
        assert m["loss"] == pytest.approx(m["pg_loss"] - c * m["entropy"] + m["kl_loss"], abs=1e-6), m
        lam = m["lambda"]
        assert m["kl_loss"] == pytest.approx(beta * (lam * m["kl_ref"] + (1 - lam) * m["kl_prev"]), abs=1e-6)
    assert [trainer.alg.lambda_at(t) for t in (1, 2, 3)] == [1.0, 0.9, 0.8]


# --------------------------------------------------------------------------- precedent and anchor


def test_precedent_is_the_policy_before_the_previous_update_and_the_anchor_moves_at_t(
    random_model_dir, tmp_path, monkeypatch
):
    trainer = Trainer(wiring_config(random_model_dir), tmp_path)  # T = 2; lambda 1, 0.9, 0.8
    probe, tap = Probe(trainer), Tap(trainer, monkeypatch)
    starts: dict[int, dict[str, torch.Tensor]] = {}  # pi_t: the policy at the start of step t
    prev_at_use: list[tuple[int, bool]] = []

    real_logprobs = trainer.learner.logprobs

    def logprobs(model, batch):
        if model is trainer.prev_model:  # its weights at the moment its log-probs are taken
            t = trainer.step + 1
            prev_at_use.append((t, same_weights(model, starts[max(t - 1, 1)])))
        return real_logprobs(model, batch)

    monkeypatch.setattr(trainer.learner, "logprobs", logprobs)

    for t in (1, 2, 3):
        starts[t] = weights(trainer.policy)
        tap.clear()
        trainer.train_step()
        prev_state = starts[max(t - 1, 1)]  # pi_{t-1}; at step 1 the base model
        anchor_state = starts[1] if t <= 2 else starts[3]  # the base model, pi_T after reincarnation
        assert len(tap.kl) == len(tap.minibatches) > 0
        for mb, kl in zip(tap.minibatches, tap.kl, strict=True):
            mask = mb.response_mask
            assert close_on(mask, kl["prev_logp"], probe.logprobs(prev_state, mb)) < ATOL, t
            assert close_on(mask, kl["ref_logp"], probe.logprobs(anchor_state, mb)) < ATOL, t
            assert kl["lam"] == trainer.alg.lambda_at(t)
            if t == 2:  # the precedent is pi_1 (the base model): the check bites only if pi_2 differs from it
                assert close_on(mask, probe.logprobs(starts[2], mb), kl["prev_logp"]) > 1e-2
    assert prev_at_use == [(1, True), (2, True), (3, True)]
    # After the last step the precedent holds that step's starting weights, not its updated ones.
    assert same_weights(trainer.prev_model, starts[3]) and not same_weights(trainer.policy, starts[3])


# ------------------------------------------------------------------------------- clip centre


@pytest.mark.parametrize("minibatch_size", [6, 64], ids=["separate-passes", "first-forward"])
def test_replayed_rows_clip_around_pi_k_over_their_behaviour_policy(
    random_model_dir, tmp_path, monkeypatch, minibatch_size
):
    """ratio = pi_theta / pi_behaviour, centre = pi_k / pi_behaviour with pi_k the policy before this update.

    Both ways pi_k is obtained are covered: a no-grad pass over the replayed rows (several minibatches)
    and the learner's own first forward (one minibatch holding the whole batch).
    """
    trainer = Trainer(wiring_config(random_model_dir, minibatch_size=minibatch_size), tmp_path)
    assert trainer.pi_k_in_first_forward(10) == (minibatch_size == 64)
    probe = Probe(trainer)
    starts = {1: weights(trainer.policy)}
    trainer.train_step()  # fills the buffer with pi_1's rollouts
    starts[2] = weights(trainer.policy)
    tap = Tap(trainer, monkeypatch)
    metrics = trainer.train_step()
    assert metrics["replayed_samples"] == 4 and metrics["phase"] == "mix"
    assert len(tap.policy) == len(tap.minibatches) == 2 * (1 if minibatch_size == 64 else 2)  # m = 2 passes
    assert {call["name"] for call in tap.policy} == {"mix_ppg"}
    replayed_rows = 0
    for index, (mb, call) in enumerate(zip(tap.minibatches, tap.policy, strict=True)):
        mask, replay = call["mask"].bool(), mb.is_replay
        fresh_mask, replay_mask = mask & ~replay[:, None], mask & replay[:, None]
        replayed_rows += int(replay.sum())
        pi_k = probe.logprobs(starts[2], mb)
        assert set(mb.policy_version[replay].tolist()) <= {1} and set(mb.policy_version[~replay].tolist()) == {2}
        pi_behaviour = probe.logprobs(starts[1], mb)
        # Every row's pi_k is this step's starting policy; replayed rows' behaviour is the policy that sampled them.
        assert close_on(mask, call["old_logp"], pi_k) < ATOL, index
        assert close_on(replay_mask, call["behavior_logp"], pi_behaviour) < ATOL, index
        assert close_on(fresh_mask, call["behavior_logp"], pi_k) < ATOL, index  # fresh rows: centre exactly 1
        # The policy has moved since step 1, so the replayed rows' centre is clearly not 1.
        if bool(replay_mask.any()):
            assert close_on(replay_mask, call["old_logp"], call["behavior_logp"]) > 1e-2
        if index == 0:  # before any optimizer step of this step: pi_theta == pi_k, ratio/centre == 1
            assert close_on(mask, call["logp"], call["old_logp"]) < ATOL
    assert replayed_rows == 4 * 2  # each pass saw the 4 replayed rows


# ------------------------------------------------------------------------------ PPO value clip


def test_ppo_replayed_rows_value_clip_is_centred_on_the_current_critic(random_model_dir, tmp_path, monkeypatch):
    """Replayed rows' old values are recomputed by the critic of this step, like the fresh rows' values.

    The values stored with them when they were generated come from a critic one or more updates old (at
    step 1 its zero-initialised head gives exactly 0), so a clip centred there would be stale. Returns
    and advantages are the stored ones: with gae_gamma = gae_lambda = 1 the return is the outcome reward
    on every token whatever the critic, so they do not depend on it.
    """
    trainer = Trainer(wiring_config(random_model_dir, name="remix-ppo", reincarnation_step=5), tmp_path)
    _, _, critic_steps = counted_step(trainer)
    assert critic_steps == 2 * 2  # m passes x 2 minibatches, like the policy
    critic = copy.deepcopy(trainer.critic).eval()  # the critic at the start of step 2
    tap = Tap(trainer, monkeypatch)
    metrics, policy_steps, critic_steps = counted_step(trainer)
    assert metrics["replayed_samples"] == 4 and policy_steps == critic_steps == 4
    assert len(tap.value) == len(tap.minibatches) == 4
    for mb, call in zip(tap.minibatches, tap.value, strict=True):
        mask = call["mask"].bool()
        replay_mask = mask & mb.is_replay[:, None]
        with torch.no_grad():
            current = critic(mb)
        assert close_on(mask, call["old_values"], current) < ATOL  # fresh and replayed rows alike
        if bool(replay_mask.any()):
            assert close_on(replay_mask, current, torch.zeros_like(current)) > 1e-3  # stale values were all 0
            rewards = mb.rewards[:, None].expand_as(call["returns"])
            assert close_on(replay_mask, call["returns"], rewards) < ATOL
