"""The ReMix training loop: rollout -> replay buffer -> learner, one step at a time.

Step t (1-based) with the policy pi_t:
  1. Mix phase (remix-* and t <= T): sample (1-p)*P fresh prompt groups from pi_t and p*P groups
     from the rollouts of the last N policies; on-policy phase (t > T, and the baselines): P fresh.
  2. Score fresh responses (reward.overlong: 'zero' sets a truncated response's reward to 0), compute
     their learner log-probs (the behaviour log-probs kept for replay) and advantages (GRPO
     group-normalised, or GAE with the critic for PPO).
  3. Log-probs of the whole batch under pi_t (clip centre), the KL anchor and the precedent pi_{t-1}.
     PPO: replayed rows get the current critic's values (the centre of their value clip, as for
     fresh rows; the critic that scored them is 1..N updates old) but keep their stored advantages
     and returns (GAE targets; with gae_gamma = gae_lambda = 1 the return is the reward, critic-free).
  4. m (UTD) passes over the batch in the Mix phase, 1 otherwise (times ppo_epochs), minimising
     Mix-PPG - c*entropy + beta*[lambda(t) KL(pi||anchor) + (1-lambda(t)) KL(pi||pi_{t-1})]
     over the batch's tokens (reward.overlong: 'mask' leaves out truncated responses, fresh or replayed).
  5. At the end of step T: policy reincarnation. The anchor becomes the current policy, the replay
     buffer is emptied, and training goes on on-policy (optionally with a fresh Adam state).
`Trainer.train_step` is that list, top to bottom. The pieces it calls: rollout engines (rollout/),
rewards (rollout_scoring.py), the step's batch (step_batch.py), the optimisation (policy_update.py),
the policy and its copies on one process or many (learner.py), checkpoint state (trainer_state.py);
the maths lives in losses.py, advantages.py and kl.py.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from remix_engine import checkpoint as ckpt
from remix_engine.batch import RolloutBatch
from remix_engine.callbacks import Metrics, NullCallbacks, TrainerCallbacks
from remix_engine.checkpoint_dirs import checkpoint_dir_name, step_of_checkpoint_dir
from remix_engine.config import TrainConfig
from remix_engine.data import Example
from remix_engine.distributed.context import init_from_env
from remix_engine.distributed.rows import RowMap
from remix_engine.evaluation import EvalSet, evaluate_sets
from remix_engine.learner import PolicyLearner
from remix_engine.modeling import load_policy
from remix_engine.policy_update import UpdatePlan, fills_pi_k_in_first_forward, update_policy
from remix_engine.prompts import PromptSet
from remix_engine.replay import ReplayBuffer
from remix_engine.rewards import reward_row
from remix_engine.rollout import RolloutEngine, VLLMRolloutEngine, build_engine
from remix_engine.rollout_scoring import score_rollouts
from remix_engine.sampling import PromptSampler, response_seed
from remix_engine.splits import load_extra_eval_sets, load_train_eval
from remix_engine.start_checks import refuse_what_cannot_run
from remix_engine.step_batch import advantaged_fresh, mixed_batch
from remix_engine.step_metrics import StepTimer, batch_metrics, sampled_completions
from remix_engine.trainer_state import Progress, capture_state, restore_state

log = logging.getLogger(__name__)

_SILENT = NullCallbacks()  # what the non-main processes of a distributed job report to


@dataclass
class TrainResult:
    final_step: int
    stopped: bool
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None


def _eval_set(name: str, examples: list[Example], prompts: list[str], samples: int | None = None) -> EvalSet:
    """An evaluation set of rendered prompts, with the answers and the rows its reward sees."""
    rows = [reward_row(e.prompt, e.extra) for e in examples]
    return EvalSet(name, prompts, [e.answer for e in examples], samples, rows)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        output_dir: Path,
        callbacks: TrainerCallbacks | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cfg = config
        self.alg = config.algorithm
        self.output_dir = Path(output_dir)
        # Under torchrun (WORLD_SIZE > 1) this process trains its shard of every step's batch.
        self.dist, self.device = init_from_env(torch.device(device))
        self.callbacks = callbacks
        refuse_what_cannot_run(config, self.device, self.dist.world_size)
        # Seeds what draws from the global generators before the rollout engine starts (LoRA's adapter
        # init); vLLM's worker reseeds them when it starts, so nothing after that may depend on them:
        # minibatch order and replay draws come from `self.generator`, prompts from PromptSampler's own
        # generators, responses from per-response seeds, and the learner runs in eval mode (no dropout).
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        policy, self.tokenizer = load_policy(config.model, self.device)
        self.learner = PolicyLearner(config, policy, self.dist, self.device)
        self.policy, self.lora, self.critic = policy, self.learner.lora, self.learner.critic
        self.ref_model, self.prev_model = self.learner.ref_model, self.learner.prev_model
        self.engine = self._make_engine()
        self._load_prompts()
        eval_rollout = config.rollout.model_copy(update={"temperature": config.eval_temperature})
        if isinstance(self.engine, VLLMRolloutEngine):  # one vLLM engine per process, shared
            self.eval_engine: RolloutEngine = self.engine.with_config(eval_rollout)
        else:
            self.eval_engine = build_engine(
                eval_rollout, policy, self.tokenizer, max_prompt_tokens=config.data.max_prompt_tokens
            )
        self.sampler = PromptSampler(len(self.train_examples), config.seed)
        self.buffer = ReplayBuffer(self.alg.history_window, self.tokenizer.pad_token_id)
        self.generator = torch.Generator().manual_seed(config.seed)  # minibatch order, replay draws
        self.step = 0
        self.fresh_rollouts = 0
        self.reincarnated_at: int | None = None
        self.eval_before: dict[str, float] = {}
        self._latest_eval: dict[str, float] = {}

    def _load_prompts(self) -> None:
        """Rendered once, with the chat template, and checked against max_prompt_tokens (never truncated)."""
        train_examples, eval_examples = load_train_eval(self.cfg)
        prompts = PromptSet(self.tokenizer, self.cfg.data)
        self.train_examples, self.train_prompts = prompts.prepare(train_examples, "training")
        self.eval_examples, eval_prompts = prompts.prepare(eval_examples, "evaluation")
        self.eval_sets = [_eval_set("", self.eval_examples, eval_prompts)]
        for extra in load_extra_eval_sets(self.cfg):
            kept, rendered = prompts.prepare(extra.examples, f"evaluation set {extra.name!r}")
            self.eval_sets.append(_eval_set(extra.name, kept, rendered, extra.samples))
        self.overlong_dropped = prompts.dropped

    @property
    def callbacks(self) -> TrainerCallbacks:
        """Only the main process reports; the other ranks of a distributed job stay silent."""
        return self._callbacks if self.dist.is_main else _SILENT

    @callbacks.setter
    def callbacks(self, value: TrainerCallbacks | None) -> None:
        self._callbacks = value or NullCallbacks()

    def _make_engine(self) -> RolloutEngine:
        return build_engine(
            self.cfg.rollout,
            self.policy,
            self.tokenizer,
            max_prompt_tokens=self.cfg.data.max_prompt_tokens,
            model_cfg=self.cfg.model,
            weights=self.learner.rollout_weights,
            seed=self.cfg.seed,
            device=self.device,
        )

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        if self.step == 0 and self.overlong_dropped:
            message = "; ".join(f"{n} {what} prompts" for what, n in self.overlong_dropped.items())
            self.callbacks.on_event(
                "prompts",
                0,
                f"dropped {message} longer than data.max_prompt_tokens={self.cfg.data.max_prompt_tokens}",
                {"overlong_dropped": dict(self.overlong_dropped)},
            )
        if self.step == 0 and not self.eval_before and self.dist.is_main:
            self.eval_before = self.evaluate()
            self.callbacks.on_event("evaluation", 0, self._eval_message(self.eval_before), self.eval_before)
        stopped = False
        last: Path | None = None
        while self.step < self.cfg.total_steps:
            if self.dist.main_decides(self.callbacks.should_stop()):
                stopped = True
                break
            metrics = self.train_step()
            is_last = self.step == self.cfg.total_steps
            evaluate_now = is_last or (self.cfg.eval_every and self.step % self.cfg.eval_every == 0)
            if evaluate_now and self.dist.is_main:
                result = self.evaluate()
                metrics.update({f"eval_{k}": v for k, v in result.items()})
                self.callbacks.on_event("evaluation", self.step, self._eval_message(result), result)
            self.callbacks.on_step(self.step, metrics)
            if is_last or self.step % self.cfg.checkpoint_every == 0:
                last = self.save_checkpoint(metrics)
        if stopped and self.step > 0 and (last is None or last.name != checkpoint_dir_name(self.step)):
            if self.dist.main_decides(self.callbacks.checkpoint_on_stop()):
                last = self.save_checkpoint()
        eval_after = {} if stopped or not self.dist.is_main else (self._latest_eval or self.evaluate())
        return TrainResult(self.step, stopped, self.eval_before, eval_after, last)

    @staticmethod
    def _eval_message(result: dict[str, float]) -> str:
        return f"greedy accuracy {result['accuracy']:.3f} on {int(result['num_prompts'])} held-out prompts"

    def evaluate(self) -> dict[str, float]:
        if not self.dist.is_main:  # the weights are the same everywhere: the main process evaluates
            return {}
        result = evaluate_sets(
            self.eval_engine,
            self.eval_sets,
            self.cfg.reward.functions[0],
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            samples=self.cfg.eval_samples,
            seed=self.cfg.seed,
        )
        self._latest_eval = result
        return result

    def in_mix_phase(self, step: int) -> bool:
        t_reinc = self.alg.reincarnation_step
        return self.alg.replay and (t_reinc is None or step <= t_reinc)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> Metrics:
        """Step t: rollout, score, advantages, mix with replay, update, hand over to pi_{t+1}."""
        t, alg, group = self.step + 1, self.alg, self.cfg.rollout.group_size
        mix, lam, timer = self.in_mix_phase(t), alg.lambda_at(t), StepTimer()
        wanted_replay = round(alg.off_policy_fraction * self.cfg.rollout.prompts_per_step) if mix else 0
        n_replay = min(wanted_replay, self.buffer.num_groups)
        num_fresh = self.cfg.rollout.prompts_per_step - n_replay

        with timer("generation"):
            fresh, examples = self.generate(t, num_fresh)  # this process's share of the fresh groups
        with timer("scoring"):
            reward_report = score_rollouts(fresh, examples, group, self.cfg.reward, self.dist.all_sum)
        with timer("behaviour_logprobs"):
            fill_pi_k = self.pi_k_in_first_forward(len(fresh) + n_replay * group)
            pad = self.tokenizer.pad_token_id
            fresh_all, adv_metrics = advantaged_fresh(
                self.learner, fresh, alg, group, pad, behaviour_pass=not fill_pi_k
            )
        with timer("replay"):
            replay_all = self.buffer.sample(n_replay, self.generator, anchor_version=self.learner.anchor_version)
            replay, replay_rows = self.dist.own_groups(replay_all)
        with timer("reference_logprobs"):
            replay = None if replay is None else replay.to(self.device)
            batch = mixed_batch(self.learner, fresh, replay, alg, lam, pad, fill_pi_k=fill_pi_k)
        with timer("learner"):
            pi_t = self.learner.snapshot()
            epochs = alg.ppo_epochs * (alg.utd_ratio if mix else 1)
            rows = self._row_map(num_fresh, len(fresh), fresh_all, replay_rows, replay_all)
            update_report = update_policy(
                self.learner,
                batch,
                UpdatePlan(epochs, lam, rows, fill_pi_k),
                alg=alg,
                temperature=self.cfg.rollout.temperature,
                exclude_truncated=self.cfg.reward.overlong == "mask",
                generator=self.generator,
            )
        with timer("policy_sync"):
            self.learner.gather_shards()
            self.learner.hold_as_previous(pi_t)
            self.engine.sync_weights(self.policy)
        if fill_pi_k:  # the replay buffer and the step metrics read the fresh rows' behaviour log-probs
            assert batch.behavior_logp is not None  # build_step_batch set it; the first minibatch overwrote it
            fresh.behavior_logp = batch.behavior_logp[: len(fresh), : fresh.response_ids.shape[1]].contiguous()
        if batch.ref_logp is not None:  # kept for replay: valid as long as the anchor stays where it is
            fresh.ref_logp = batch.ref_logp[: len(fresh), : fresh.response_ids.shape[1]].contiguous()
        with timer("replay"):
            if mix:
                # Distributed, fresh_all is every process's rows gathered, without anchor log-probs.
                self.buffer.add(t, fresh_all, anchor_version=self.learner.anchor_version)
        self.fresh_rollouts += len(fresh_all)
        self.step = t

        metrics = self._step_metrics(t, mix, fresh_all, replay_all, timer, epochs)
        metrics.update({**update_report, **adv_metrics, **reward_report})
        if self.cfg.log_completions:
            samples = sampled_completions(fresh_all, self.cfg.log_completions)
            self.callbacks.on_event("samples", t, f"{len(samples)} sampled completions", {"samples": samples})
        if alg.reincarnation_step == t:
            self.reincarnate()
        return metrics

    def pi_k_in_first_forward(self, batch_rows: int) -> bool:
        """Whether the learner's first forward scores pi_k (one minibatch, one process; see UpdatePlan)."""
        return fills_pi_k_in_first_forward(self.alg, self.dist, batch_rows)

    def generate(self, step: int, num_prompts: int) -> tuple[RolloutBatch, list[Example]]:
        """This process's slots of `num_prompts` freshly drawn prompt groups, and their examples."""
        indices = self.sampler.take(num_prompts)  # every process draws the same prompts
        start, stop = self.dist.shard_range(num_prompts)  # and samples its own slots of them
        examples = [self.train_examples[i] for i in indices[start:stop]]
        group = self.cfg.rollout.group_size
        seeds = [response_seed(self.cfg.seed, step, i, j) for i in range(start, stop) for j in range(group)]
        batch = self.engine.generate(
            [self.train_prompts[i] for i in indices[start:stop]],
            [ex.answer for ex in examples],
            indices[start:stop],
            group_size=group,
            seeds=seeds,
            policy_version=step,
            group_id_start=(step - 1) * self.cfg.rollout.prompts_per_step + start,
        )
        return batch.to(self.device), examples

    def _row_map(
        self,
        num_fresh: int,
        own_fresh_rows: int,
        fresh_all: RolloutBatch,
        replay_rows: torch.Tensor,
        replay_all: RolloutBatch | None,
    ) -> RowMap:
        """Where this process's rows (its fresh shard, then its replayed groups) sit in the global batch."""
        first_fresh_row = self.dist.shard_range(num_fresh)[0] * self.cfg.rollout.group_size
        return RowMap(
            torch.cat([first_fresh_row + torch.arange(own_fresh_rows), len(fresh_all) + replay_rows]),
            len(fresh_all) + (0 if replay_all is None else len(replay_all)),
        )

    def _step_metrics(
        self, step: int, mix: bool, fresh: RolloutBatch, replay: RolloutBatch | None, timer: StepTimer, epochs: int
    ) -> Metrics:
        seconds = timer.seconds
        rollout_s = seconds["generation"] + seconds["scoring"]
        learner_s = sum(value for part, value in seconds.items() if part not in ("generation", "scoring"))
        fresh_tokens = float(fresh.response_mask.sum())
        learner_tokens = fresh_tokens + (0.0 if replay is None else float(replay.response_mask.sum()))
        return {
            "step": step,
            "phase": "mix" if mix else "on-policy",
            "lambda": self.alg.lambda_at(step),
            **batch_metrics(fresh, replay, step),
            "overlong_prompts_dropped": sum(self.overlong_dropped.values()),
            "fresh_rollouts_total": self.fresh_rollouts,
            "replayed_samples_total": self.buffer.total_replayed,
            "replay_buffer_size": len(self.buffer),
            "rollout_s": rollout_s,
            "learner_s": learner_s,
            "step_s": timer.total(),
            **{f"time_{part}_s": value for part, value in seconds.items()},
            "generated_tokens": int(fresh_tokens),
            "trained_tokens": int(epochs * learner_tokens),  # response tokens, once per pass over the batch
            "gen_tokens_per_s": fresh_tokens / max(seconds["generation"], 1e-9),
            "learner_tokens_per_s": epochs * learner_tokens / max(learner_s, 1e-9),
        }

    # ------------------------------------------------------------------ reincarnation
    def reincarnate(self) -> None:
        """Policy reincarnation: the KL anchor becomes the current policy; replay stops."""
        self.learner.anchor_to_current(reset_optimizer=self.alg.reset_optimizer_on_reincarnation)
        dropped = len(self.buffer)
        self.buffer.clear()
        self.reincarnated_at = self.step
        self.callbacks.on_event(
            "reincarnated",
            self.step,
            f"policy reincarnation at step {self.step}: KL anchor reset to the current policy, "
            f"replay buffer emptied ({dropped} responses), training continues on-policy",
            {
                "step": self.step,
                "dropped_replay_responses": dropped,
                "optimizer_reset": self.alg.reset_optimizer_on_reincarnation,
            },
        )

    # ------------------------------------------------------------------ checkpoints
    def _progress(self) -> Progress:
        return Progress(self.step, self.fresh_rollouts, self.reincarnated_at, self.eval_before)

    def save_checkpoint(self, metrics: Metrics | None = None) -> Path:
        # Collective under FSDP: every process gathers, the main one writes.
        state = capture_state(self.learner, self.buffer, self.sampler, self.generator, self._progress())
        if not self.dist.is_main:  # every process holds the same state; the main one writes it
            return self.checkpoint_root / checkpoint_dir_name(self.step)
        metrics = metrics or {}
        score = metrics.get("eval_accuracy")
        meta = {"config": self.cfg.model_dump(mode="json"), "metrics": metrics, "eval_score": score}
        path = ckpt.save_checkpoint(self.checkpoint_root, self.step, self.learner.export(), self.tokenizer, state, meta)
        self.callbacks.on_event(
            "checkpoint", self.step, f"checkpoint saved at step {self.step}", {"path": str(path), "eval_score": score}
        )
        self.callbacks.on_checkpoint(self.step, path, metrics)
        pruned = ckpt.prune_checkpoints(
            self.checkpoint_root, self.cfg.keep_checkpoints, protect={path}, keep_best=self.cfg.keep_best_checkpoints
        )
        for old in pruned:
            step = step_of_checkpoint_dir(old.name)
            if step is not None:  # pruning lists checkpoint folders only
                self.callbacks.on_checkpoint_pruned(step, old)
        return path

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    @staticmethod
    def latest_checkpoint(output_dir: Path) -> Path | None:
        return ckpt.latest_checkpoint(Path(output_dir) / "checkpoints")

    def resume(self, checkpoint_dir: Path) -> None:
        """Restore everything needed for the next step to be identical to an uninterrupted run."""
        checkpoint_dir = Path(checkpoint_dir)
        state = ckpt.load_trainer_state(checkpoint_dir)
        progress = restore_state(state, checkpoint_dir, self.learner, self.buffer, self.sampler, self.generator)
        self.step, self.fresh_rollouts = progress.step, progress.fresh_rollouts
        self.reincarnated_at, self.eval_before = progress.reincarnated_at, progress.eval_before
        self.engine.sync_weights(self.policy)
        self.callbacks.on_event(
            "resumed", self.step, f"resumed from checkpoint at step {self.step}", {"path": str(checkpoint_dir)}
        )
