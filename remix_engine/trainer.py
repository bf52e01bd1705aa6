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
This class only orchestrates; the maths lives in losses.py, advantages.py and kl.py.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoModelForCausalLM

from remix_engine import checkpoint as ckpt
from remix_engine.advantages import ADVANTAGES, gae_returns
from remix_engine.batch import RolloutBatch
from remix_engine.behavior import keyword_rates
from remix_engine.checkpoint_dirs import checkpoint_dir_name, step_of_checkpoint_dir
from remix_engine.config import TrainConfig
from remix_engine.context_length import check_vllm_context, model_position_limit
from remix_engine.critic import ValueModel
from remix_engine.data import Example
from remix_engine.distributed import (
    RowMap,
    check_shardable,
    gather_into,
    init_from_env,
    is_sharded,
    load_parameter_snapshot,
    load_whole_optimizer_state,
    load_whole_state,
    local_minibatch,
    parameter_snapshot,
    shard_copy,
    whole_optimizer_state,
    whole_state_dict,
    wrap_for_training,
)
from remix_engine.evaluation import EvalSet, evaluate_sets
from remix_engine.judge import check_judge
from remix_engine.lora import ADAPTER_DIR, AdapterSnapshot, LoraPolicy, MergedExport
from remix_engine.losses import POLICY_LOSSES, entropy_bonus, kl_convex_loss, value_loss
from remix_engine.modeling import load_policy, sequence_logprobs
from remix_engine.preflight import check_fits, load_model_config
from remix_engine.prompts import PromptSet, completions_for_rewards
from remix_engine.replay import ReplayBuffer
from remix_engine.reward_specs import JUDGE_REWARDS
from remix_engine.rewards import count_reward_errors, reward_metrics, reward_row
from remix_engine.rollout import HFRolloutEngine, RolloutEngine
from remix_engine.sampling import PromptSampler, response_seed
from remix_engine.sandbox import check_sandbox
from remix_engine.scoring import compose_rewards_isolated
from remix_engine.splits import load_extra_eval_sets, load_train_eval
from remix_engine.vllm_rollout import VLLMRolloutEngine, check_backend_available

log = logging.getLogger(__name__)
Metrics = dict[str, float | int | str]


class TrainerCallbacks(Protocol):
    def on_step(self, step: int, metrics: Metrics) -> None: ...
    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None: ...
    def on_checkpoint(self, step: int, path: Path, metrics: Metrics) -> None: ...
    def should_stop(self) -> bool: ...

    # Optional: `checkpoint_on_stop() -> bool`, asked once when `should_stop` ended training early;
    # True saves a checkpoint of the step reached (on every process: under FSDP saving is collective).


class NullCallbacks:
    def on_step(self, step: int, metrics: Metrics) -> None:
        pass

    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, metrics: Metrics) -> None:
        pass

    def should_stop(self) -> bool:
        return False


_SILENT = NullCallbacks()  # what the non-main processes of a distributed job report to


@dataclass
class TrainResult:
    final_step: int
    stopped: bool
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None


def make_rollout_engine(
    cfg: Any, model: torch.nn.Module, tokenizer: Any, max_prompt_tokens: int | None = None
) -> RolloutEngine:
    """The HF engine; the vLLM engine needs more context and is built by the Trainer."""
    if cfg.backend == "hf":
        return HFRolloutEngine(model, tokenizer, cfg, max_prompt_tokens=max_prompt_tokens)
    raise ValueError(f"rollout.backend={cfg.backend!r} is built by the Trainer (see vllm_rollout.py)")


def _eval_set(name: str, examples: list[Example], prompts: list[str], samples: int | None = None) -> EvalSet:
    """An evaluation set of rendered prompts, with the answers and the rows its reward sees."""
    rows = [reward_row(e.prompt, e.extra) for e in examples]
    return EvalSet(name, prompts, [e.answer for e in examples], samples, rows)


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


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
        # FSDP: the learner and the frozen policy copies are sharded over the processes (see distributed.py).
        self.fsdp = self.dist.enabled and config.distributed.strategy == "fsdp"
        self.callbacks = callbacks  # type: ignore[assignment]
        check_backend_available(config.rollout, self.device)  # e.g. vLLM without CUDA: refuse at start
        if any(spec.name == "python" for spec in config.reward.functions):
            log.info("reward sandbox: %s", check_sandbox())  # a worker that cannot jail it refuses now
        if any(spec.name in JUDGE_REWARDS for spec in config.reward.functions):
            check_judge()  # a worker without a judge endpoint refuses now
        # Seeds what draws from the global generators before the rollout engine starts (LoRA's adapter
        # init); vLLM's worker reseeds them when it starts, so nothing after that may depend on them:
        # minibatch order and replay draws come from `self.generator`, prompts from PromptSampler's own
        # generators, responses from per-response seeds, and the learner runs in eval mode (no dropout).
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        model_config = None
        if self.device.type == "cuda" or config.rollout.backend == "vllm":
            model_config = load_model_config(config.model)  # its config only: no weights yet
        # vLLM refuses prompts as long as its context, which the model's positions bound: refuse now a job
        # whose responses leave no room for a prompt.
        check_vllm_context(config, model_position_limit(model_config))
        if self.device.type == "cuda":  # refuse a job that cannot fit before loading any weights
            free, total = torch.cuda.mem_get_info(self.device)
            need = check_fits(
                config,
                free,
                model_config,
                world_size=self.dist.world_size,
                device_bytes=total,
            )
            log.info("memory pre-flight: about %.2f GiB of %.2f GiB free", need.total / 2**30, free / 2**30)

        self.policy, self.tokenizer = load_policy(config.model, self.device)
        # With LoRA the policy object gains adapters in place and only they are trained.
        self.lora = LoraPolicy(self.policy, config.lora) if config.lora.enabled else None
        self.ref_model = self._policy_copy(base=True)  # KL anchor: the base model until reincarnation
        self.prev_model = self._policy_copy(base=False)  # precedent policy pi_{t-1}
        self.engine = self._make_engine()
        train_examples, eval_examples = load_train_eval(config)
        prompts = PromptSet(self.tokenizer, config.data)
        # Rendered once, with the chat template, and checked against max_prompt_tokens (never truncated).
        self.train_examples, self.train_prompts = prompts.prepare(train_examples, "training")
        self.eval_examples, eval_prompts = prompts.prepare(eval_examples, "evaluation")
        self.eval_sets = [_eval_set("", self.eval_examples, eval_prompts)]
        for extra in load_extra_eval_sets(config):
            kept, rendered = prompts.prepare(extra.examples, f"evaluation set {extra.name!r}")
            self.eval_sets.append(_eval_set(extra.name, kept, rendered, extra.samples))
        self.overlong_dropped = prompts.dropped
        eval_rollout = config.rollout.model_copy(update={"temperature": config.eval_temperature})
        if isinstance(self.engine, VLLMRolloutEngine):  # one vLLM engine per process, shared
            self.eval_engine: RolloutEngine = self.engine.with_config(eval_rollout)
        else:
            self.eval_engine = make_rollout_engine(
                eval_rollout, self.policy, self.tokenizer, config.data.max_prompt_tokens
            )
        self.sampler = PromptSampler(len(self.train_examples), config.seed)
        self.buffer = ReplayBuffer(self.alg.history_window, self.tokenizer.pad_token_id)
        self.generator = torch.Generator().manual_seed(config.seed)  # minibatch order, replay draws
        self.critic: ValueModel | None = None
        if self.alg.advantage_estimator == "gae":
            self.critic = ValueModel(self.policy).to(self.device)
        check_shardable(config, self.dist.world_size)
        # What the learner differentiates through and the optimizers step: the modules themselves in one
        # process; across processes DDP wrappers, or FSDP copies whose shards are gathered back into
        # `policy`/`critic` (the full weights rollouts, scoring passes and checkpoints use) after each update.
        strategy = config.distributed.strategy
        self.train_policy = wrap_for_training(self.policy, self.dist, causal_lm=True, strategy=strategy)
        self.optimizer = self._make_optimizer(self._trainable(self.train_policy), config.optim.lr)
        self.train_critic: torch.nn.Module | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if self.critic is not None:
            self.train_critic = wrap_for_training(self.critic, self.dist, causal_lm=False, strategy=strategy)
            self.critic_optimizer = self._make_optimizer(self._trainable(self.train_critic), config.optim.critic_lr)

        self.step = 0
        self.fresh_rollouts = 0
        self.reincarnated_at: int | None = None
        self.eval_before: dict[str, float] = {}
        self._latest_eval: dict[str, float] = {}

    @property
    def callbacks(self) -> TrainerCallbacks:
        """Only the main process reports; the other ranks of a distributed job stay silent."""
        return self._callbacks if self.dist.is_main else _SILENT

    @callbacks.setter
    def callbacks(self, value: TrainerCallbacks | None) -> None:
        self._callbacks = value or NullCallbacks()

    def _make_engine(self) -> RolloutEngine:
        cfg = self.cfg
        if cfg.rollout.backend == "vllm":
            return VLLMRolloutEngine(
                self.policy,
                self.tokenizer,
                cfg.rollout,
                model_cfg=cfg.model,
                weights=self._rollout_weights,
                max_prompt_tokens=cfg.data.max_prompt_tokens,
                seed=cfg.seed,
                device=self.device,
            )
        return make_rollout_engine(cfg.rollout, self.policy, self.tokenizer, cfg.data.max_prompt_tokens)

    def _rollout_weights(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The policy's weights under the base model's names (merged with LoRA), for a rollout engine."""
        if self.lora is not None:
            return self.lora.merged_state_dict().items()
        return self.policy.state_dict().items()

    def _policy_copy(self, *, base: bool) -> torch.nn.Module:
        if self.lora is not None:
            return AdapterSnapshot(self.lora, None if base else self.lora.adapter_state())
        return shard_copy(self.policy, frozen=True) if self.fsdp else _frozen_copy(self.policy)

    def _policy_state(self) -> dict[str, torch.Tensor]:
        """A copy of the trained weights: the whole model, only the adapters with LoRA, or this
        process's shards under FSDP (for `_load_policy_state` into a policy copy)."""
        if self.lora is not None:
            return self.lora.adapter_state()
        if self.fsdp:
            return parameter_snapshot(self.train_policy)
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    def _load_policy_state(self, policy_copy: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Make a policy copy (KL anchor, precedent policy) hold a `_policy_state`."""
        if self.fsdp:
            load_parameter_snapshot(policy_copy, state)
        else:
            policy_copy.load_state_dict(state)

    @staticmethod
    def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    def _make_optimizer(self, params: Any, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.AdamW(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)

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
            wanted = getattr(self.callbacks, "checkpoint_on_stop", None)
            if self.dist.main_decides(wanted is not None and bool(wanted())):
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
        t = self.step + 1
        mix = self.in_mix_phase(t)
        started = time.perf_counter()
        prompts_per_step = self.cfg.rollout.prompts_per_step
        wanted_replay = round(self.alg.off_policy_fraction * prompts_per_step) if mix else 0
        n_replay = min(wanted_replay, self.buffer.num_groups)
        num_fresh = prompts_per_step - n_replay
        fresh = self._rollout(t, num_fresh)  # this process's share of the fresh groups
        rollout_s = time.perf_counter() - started

        learner_started = time.perf_counter()
        epochs = self.alg.ppo_epochs * (self.alg.utd_ratio if mix else 1)
        pi_k_in_first_forward = self.pi_k_in_first_forward(len(fresh) + n_replay * self.cfg.rollout.group_size)
        fresh_all = self._prepare_fresh(fresh, behaviour_pass=not pi_k_in_first_forward)  # whole batch, scored
        replay_all = self.buffer.sample(n_replay, self.generator)
        replay, replay_rows = self.dist.own_groups(replay_all)
        lam = self.alg.lambda_at(t)
        batch = self._attach_reference_logprobs(
            fresh, None if replay is None else replay.to(self.device), lam, pi_k_pending=pi_k_in_first_forward
        )
        first_fresh_row = self.dist.shard_range(num_fresh)[0] * self.cfg.rollout.group_size
        rows = RowMap(
            torch.cat([first_fresh_row + torch.arange(len(fresh)), len(fresh_all) + replay_rows]),
            len(fresh_all) + (0 if replay_all is None else len(replay_all)),
        )
        snapshot = self._policy_state()  # pi_t
        update_metrics = self._update(batch, lam, epochs, rows, pi_k_pending=pi_k_in_first_forward)
        self._gather_shards()
        if pi_k_in_first_forward:  # the replay buffer and the step metrics read the fresh rows' scores
            width = fresh.response_ids.shape[1]
            fresh.behavior_logp = batch.behavior_logp[: len(fresh), :width].contiguous()
        self._load_policy_state(self.prev_model, snapshot)
        self.engine.sync_weights(self.policy)
        if mix:
            self.buffer.add(t, fresh_all)
        self.fresh_rollouts += len(fresh_all)
        self.step = t
        learner_s = time.perf_counter() - learner_started

        metrics = self._step_metrics(t, mix, fresh_all, replay_all, update_metrics)
        learner_tokens = float(fresh_all.response_mask.sum()) + (
            0.0 if replay_all is None else float(replay_all.response_mask.sum())
        )
        metrics.update(
            rollout_s=rollout_s,
            learner_s=learner_s,
            step_s=time.perf_counter() - started,
            gen_tokens_per_s=float(fresh_all.response_mask.sum()) / max(rollout_s, 1e-9),
            learner_tokens_per_s=epochs * learner_tokens / max(learner_s, 1e-9),
        )
        self._emit_samples(t, fresh_all)
        if self.alg.reincarnation_step == t:
            self.reincarnate()
        return metrics

    def pi_k_in_first_forward(self, batch_rows: int) -> bool:
        """Whether the learner's first forward can score the step's batch instead of separate no-grad passes.

        When one minibatch holds the whole batch (one process), that forward runs before any optimizer
        step: its log-probs are pi_k's for every row, and the behaviour log-probs of the fresh rows.
        """
        return self.alg.minibatch_size >= batch_rows and not self.dist.enabled

    def _rollout(self, step: int, num_prompts: int) -> RolloutBatch:
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
        batch = batch.to(self.device)
        rows = [reward_row(ex.prompt, ex.extra) for ex in examples]  # the rewards see each sample's row
        batch.rows = [rows[i] for i in range(len(examples)) for _ in range(group)]
        completions = completions_for_rewards(batch.prompts, batch.completions)
        total, per_fn = compose_rewards_isolated(self.cfg.reward.functions, completions, batch.answers, batch.rows)
        # Failed reward calls this step and each reward's mean and error rate (all processes).
        self._reward_errors = int(self.dist.all_sum(count_reward_errors(per_fn)))
        self._reward_metrics = reward_metrics(per_fn, self.dist.all_sum)
        batch.rewards = torch.tensor(total, dtype=torch.float32, device=self.device)
        if self.cfg.reward.overlong == "zero":  # before advantages; `correct` (accuracy) stays as scored
            batch.rewards = batch.rewards.masked_fill(batch.truncated_rows, 0.0)
        first = per_fn[self.cfg.reward.functions[0].name]
        batch.correct = torch.tensor([s > 0 for s in first], dtype=torch.bool, device=self.device)
        batch.is_replay = torch.zeros(len(batch), dtype=torch.bool, device=self.device)
        return batch

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        chunks = []
        row_chunks = list(torch.arange(len(batch)).split(self.alg.minibatch_size))
        for rows in row_chunks:
            logp, _ = sequence_logprobs(
                model, batch.select(rows), temperature=self.cfg.rollout.temperature, with_entropy=False
            )
            chunks.append(logp)
        if is_sharded(model):  # every forward of a sharded model is collective: match the busiest rank
            for _ in range(self.dist.all_max(len(row_chunks)) - len(row_chunks)):
                sequence_logprobs(
                    model, batch.select([0]), temperature=self.cfg.rollout.temperature, with_entropy=False
                )
        return torch.cat(chunks, dim=0)

    @torch.no_grad()
    def _prepare_fresh(self, fresh: RolloutBatch, *, behaviour_pass: bool = True) -> RolloutBatch:
        """Behaviour log-probs of fresh data are the learner's own, so ratios start at exactly 1.

        Without `behaviour_pass` they are left to the learner's first forward (see `pi_k_in_first_forward`).

        Returns the whole step's fresh batch: `fresh` itself, or all processes' shards gathered, on
        which advantages are computed (whitening and metrics see the whole batch) before each
        process takes back the rows of its shard.
        """
        if behaviour_pass:
            fresh.behavior_logp = self._logprobs(self.policy, fresh)
        if self.critic is not None:
            fresh.values = self.critic(fresh).detach()
            _, fresh.returns = gae_returns(
                fresh.rewards, fresh.values, fresh.response_mask, self.alg.gae_gamma, self.alg.gae_lambda
            )
        scored = self.dist.gather_batch(fresh, self.tokenizer.pad_token_id)
        estimator = ADVANTAGES.get(self.alg.advantage_estimator)
        scored.advantages, self._adv_metrics = estimator(scored, cfg=self.alg)
        if scored is not fresh:
            group = self.cfg.rollout.group_size
            first = self.dist.shard_range(len(scored) // group)[0] * group
            own = scored.advantages[first : first + len(fresh), : fresh.response_ids.shape[1]]
            fresh.advantages = own.contiguous()
        return scored

    def _attach_reference_logprobs(
        self, fresh: RolloutBatch, replay: RolloutBatch | None, lam: float, *, pi_k_pending: bool = False
    ) -> RolloutBatch:
        """The step's batch with the log-probs its loss compares against.

        old_logp (pi_k, this step's starting policy) of fresh rows is their behaviour log-prob,
        computed by the same model just before; only replayed rows need a pass. With `pi_k_pending`
        the learner's first forward fills both in (NaN until then, so a missed fill cannot go
        unnoticed). Anchor log-probs are computed only for KL terms with a non-zero weight unless
        `log_inactive_kl` asks for them all. PPO: replayed rows' values come from the current critic.
        """
        if pi_k_pending:
            fresh.behavior_logp = torch.full(fresh.response_ids.shape, float("nan"), device=self.device)
        fresh.old_logp = fresh.behavior_logp
        parts = [fresh]
        if replay is not None:
            replay.old_logp = (
                torch.full(replay.response_ids.shape, float("nan"), device=self.device)
                if pi_k_pending
                else self._logprobs(self.policy, replay)
            )
            if self.critic is not None:  # PPO: the value clip is centred on this step's critic, as for fresh rows
                with torch.no_grad():
                    replay.values = self.critic(replay)
            parts.append(replay)
        batch = RolloutBatch.concat(parts, self.tokenizer.pad_token_id)
        coef, log_all = self.alg.kl_coef, self.alg.log_inactive_kl
        batch.ref_logp = self._logprobs(self.ref_model, batch) if log_all or lam * coef != 0 else None
        batch.prev_logp = self._logprobs(self.prev_model, batch) if log_all or (1 - lam) * coef != 0 else None
        return batch

    def _update(
        self, batch: RolloutBatch, lam: float, epochs: int, rows: RowMap | None = None, *, pi_k_pending: bool = False
    ) -> dict[str, float]:
        """Optimiser steps over minibatches of the step's batch; `rows` places this process's rows in it.

        With `pi_k_pending` the first minibatch is the whole batch, and its forward fills in old_logp
        for every row and behavior_logp for the fresh ones (see `pi_k_in_first_forward`).
        """
        alg = self.alg
        loss_fn = POLICY_LOSSES.get(alg.policy_loss)
        exclude_truncated = self._masks_truncated
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)

        def record(values: dict[str, float]) -> None:
            for key, value in values.items():
                sums[key] += float(value)
                counts[key] += 1

        total = len(batch) if rows is None else rows.total
        for _ in range(epochs):
            order = torch.randperm(total, generator=self.generator)
            for global_rows in order.split(alg.minibatch_size):
                mb, share = self._minibatch(batch, global_rows, rows)
                mask = mb.loss_mask(exclude_truncated=exclude_truncated)  # the forward reads response_mask
                logp, entropy = sequence_logprobs(self.train_policy, mb, temperature=self.cfg.rollout.temperature)
                if pi_k_pending:
                    pi_k_pending = False
                    mb.old_logp = logp.detach()
                    mb.behavior_logp = torch.where(mb.is_replay[:, None], mb.behavior_logp, mb.old_logp)
                    batch.old_logp[global_rows] = mb.old_logp
                    batch.behavior_logp[global_rows] = mb.behavior_logp
                pg, pg_m = loss_fn(
                    logp,
                    mb.old_logp,
                    mb.behavior_logp,
                    mb.advantages,
                    mask,
                    clip_eps=alg.clip_eps,
                    agg=alg.loss_aggregation,
                )
                ent, ent_m = entropy_bonus(entropy, mask, coef=alg.entropy_coef, agg=alg.loss_aggregation)
                kl, kl_m = kl_convex_loss(
                    logp,
                    mb.ref_logp,
                    mb.prev_logp,
                    mask,
                    lam=lam,
                    coef=alg.kl_coef,
                    kind=alg.kl_estimator,
                    agg=alg.loss_aggregation,
                )
                loss = pg + ent + kl
                self.optimizer.zero_grad(set_to_none=True)
                (loss if share == 1.0 else loss * share).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.train_policy.parameters(), self.cfg.optim.grad_clip)
                self.optimizer.step()
                # This process's part of the minibatch loss; the parts add up over processes.
                record({"loss": float(loss.detach()) * share / self.dist.world_size})
                if share > 0 or not self.dist.enabled:  # a placeholder minibatch has nothing to report
                    record({**pg_m, **ent_m, **kl_m, "grad_norm": float(grad_norm)})
                    record(_replay_ratio_stats(logp.detach(), mb))
                if self.critic is not None:
                    critic_metrics = self._critic_step(mb, share)
                    if share > 0 or not self.dist.enabled:
                        record(critic_metrics)
        return self.dist.combine_metrics({key: sums[key] / counts[key] for key in sums}, summed=("loss",))

    def _gather_shards(self) -> None:
        """FSDP: the updated shards into the full models every process keeps (no-op otherwise)."""
        if is_sharded(self.train_policy):
            gather_into(self.train_policy, self.policy)
        if self.train_critic is not None and is_sharded(self.train_critic):
            gather_into(self.train_critic, self.critic)  # type: ignore[arg-type]

    def _minibatch(
        self, batch: RolloutBatch, global_rows: torch.Tensor, rows: RowMap | None
    ) -> tuple[RolloutBatch, float]:
        """This process's rows of a minibatch and the weight of its loss (1 for a single process)."""
        if rows is None or not self.dist.enabled:
            return batch.select(global_rows), 1.0
        return local_minibatch(
            batch,
            rows.local_rows(global_rows),
            self.dist,
            self.alg.loss_aggregation,
            exclude_truncated=self._masks_truncated,
        )

    @property
    def _masks_truncated(self) -> bool:
        """reward.overlong 'mask': truncated responses are left out of every loss term (DAPO's overlong
        filtering); their rewards still count in their group's advantage statistics."""
        return self.cfg.reward.overlong == "mask"

    def _critic_step(self, mb: RolloutBatch, share: float = 1.0) -> dict[str, float]:
        assert self.critic is not None and self.critic_optimizer is not None and self.train_critic is not None
        values = self.train_critic(mb)
        loss, metrics = value_loss(
            values,
            mb.values,
            mb.returns,
            mb.loss_mask(exclude_truncated=self._masks_truncated),
            clip=self.alg.value_clip,
            agg=self.alg.loss_aggregation,
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        (self.alg.value_coef * loss * share).backward()
        torch.nn.utils.clip_grad_norm_(self.train_critic.parameters(), self.cfg.optim.grad_clip)
        self.critic_optimizer.step()
        return metrics

    # ------------------------------------------------------------------ reincarnation
    def reincarnate(self) -> None:
        """Policy reincarnation: the KL anchor becomes the current policy; replay stops."""
        self._load_policy_state(self.ref_model, self._policy_state())
        dropped = len(self.buffer)
        self.buffer.clear()
        if self.alg.reset_optimizer_on_reincarnation:
            self.optimizer = self._make_optimizer(self._trainable(self.train_policy), self.cfg.optim.lr)
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

    # ------------------------------------------------------------------ metrics
    def _step_metrics(
        self, step: int, mix: bool, fresh: RolloutBatch, replay: RolloutBatch | None, update: dict[str, float]
    ) -> Metrics:
        lengths = fresh.response_lengths.float()
        metrics: Metrics = {
            "step": step,
            "phase": "mix" if mix else "on-policy",
            "lambda": self.alg.lambda_at(step),
            "reward_mean": float(fresh.rewards.mean()),
            "reward_std": float(fresh.rewards.std()) if len(fresh) > 1 else 0.0,
            "reward_errors": getattr(self, "_reward_errors", 0),
            "accuracy": float(fresh.correct.float().mean()),
            "response_length_fresh": float(lengths.mean()),
            "response_length_fresh_correct": _masked_mean(lengths, fresh.correct),
            "response_length_fresh_incorrect": _masked_mean(lengths, ~fresh.correct),
            "fresh_samples": len(fresh),
            "truncated_fraction": float(fresh.truncated_rows.float().mean()) if len(fresh) else 0.0,
            "overlong_prompts_dropped": sum(self.overlong_dropped.values()),
            "replayed_samples": 0 if replay is None else len(replay),
            "fresh_rollouts_total": self.fresh_rollouts,
            "replayed_samples_total": self.buffer.total_replayed,
            "replay_buffer_size": len(self.buffer),
            "rollout_logp_mismatch_max": float(
                ((fresh.rollout_logp - fresh.behavior_logp).abs() * fresh.response_mask).max()
            ),
        }
        if replay is not None:
            metrics["response_length_replay"] = float(replay.response_lengths.float().mean())
            metrics["replay_policy_age_mean"] = float((step - replay.policy_version).float().mean())
        metrics.update(update)
        metrics.update(self._adv_metrics)
        metrics.update(getattr(self, "_reward_metrics", {}))
        metrics.update({f"kw_{k}": v for k, v in keyword_rates(fresh.completions).items()})
        return metrics

    def _emit_samples(self, step: int, fresh: RolloutBatch) -> None:
        count = min(self.cfg.log_completions, len(fresh))
        if not count:
            return
        samples = [
            {
                "prompt": fresh.prompts[i],
                "completion": fresh.completions[i],
                "answer": fresh.answers[i],
                "reward": float(fresh.rewards[i]),
                "truncated": bool(fresh.truncated_rows[i]),  # hit max_new_tokens without EOS or a stop string
            }
            for i in range(count)
        ]
        self.callbacks.on_event("samples", step, f"{count} sampled completions", {"samples": samples})

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, metrics: Metrics | None = None) -> Path:
        # Collective under FSDP: every process gathers, the main one writes.
        optimizer_state = whole_optimizer_state(self.train_policy, self.optimizer)
        critic_optimizer_state = (
            None
            if self.train_critic is None or self.critic_optimizer is None
            else whole_optimizer_state(self.train_critic, self.critic_optimizer)
        )
        ref_state = None if self.reincarnated_at is None else whole_state_dict(self.ref_model)
        prev_state = whole_state_dict(self.prev_model)
        if not self.dist.is_main:  # every process holds the same state; the main one writes it
            return self.checkpoint_root / checkpoint_dir_name(self.step)
        state = {
            "step": self.step,
            "optimizer": optimizer_state,
            "critic": None if self.critic is None else self.critic.state_dict(),
            "critic_optimizer": critic_optimizer_state,
            "ref_model": ref_state,
            "prev_model": prev_state,
            "replay": self.buffer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "python": random.getstate(),
            },
            "fresh_rollouts": self.fresh_rollouts,
            "reincarnated_at": self.reincarnated_at,
            "eval_before": self.eval_before,
        }
        metrics = metrics or {}
        score = metrics.get("eval_accuracy")
        meta = {"config": self.cfg.model_dump(mode="json"), "metrics": metrics, "eval_score": score}
        exported = self.policy if self.lora is None else MergedExport(self.lora)  # LoRA: merged + adapter/
        path = ckpt.save_checkpoint(self.checkpoint_root, self.step, exported, self.tokenizer, state, meta)
        self.callbacks.on_event(
            "checkpoint",
            self.step,
            f"checkpoint saved at step {self.step}",
            {"path": str(path), "eval_score": score},
        )
        self.callbacks.on_checkpoint(self.step, path, metrics)
        pruned = ckpt.prune_checkpoints(
            self.checkpoint_root,
            self.cfg.keep_checkpoints,
            protect={path},
            keep_best=self.cfg.keep_best_checkpoints,
        )
        notify = getattr(self.callbacks, "on_checkpoint_pruned", None)
        for old in pruned:
            if notify is not None:
                notify(step_of_checkpoint_dir(old.name), old)
        return path

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    @staticmethod
    def latest_checkpoint(output_dir: Path) -> Path | None:
        return ckpt.latest_checkpoint(Path(output_dir) / "checkpoints")

    def resume(self, checkpoint_dir: Path) -> None:
        """Restore everything needed for the next step to be identical to an uninterrupted run."""
        state = ckpt.load_trainer_state(Path(checkpoint_dir))
        if self.lora is not None:
            self.lora.load_adapter_dir(Path(checkpoint_dir) / ADAPTER_DIR)
        else:
            saved = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=self.policy.dtype)
            self.policy.load_state_dict(saved.state_dict())
        load_whole_state(self.prev_model, state["prev_model"])
        if state["ref_model"] is not None:
            load_whole_state(self.ref_model, state["ref_model"])
        self._load_learner_state(self.train_policy, self.policy, self.optimizer, state["optimizer"])
        if self.critic is not None and state["critic"] is not None:
            self.critic.load_state_dict(state["critic"])
            self._load_learner_state(self.train_critic, self.critic, self.critic_optimizer, state["critic_optimizer"])  # type: ignore[arg-type]
        self.buffer.load_state_dict(state["replay"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        random.setstate(state["rng"]["python"])
        self.step = int(state["step"])
        self.fresh_rollouts = int(state["fresh_rollouts"])
        self.reincarnated_at = state["reincarnated_at"]
        self.eval_before = dict(state["eval_before"])
        self.engine.sync_weights(self.policy)
        self.callbacks.on_event(
            "resumed",
            self.step,
            f"resumed from checkpoint at step {self.step}",
            {"path": str(checkpoint_dir)},
        )

    @staticmethod
    def _load_learner_state(
        trained: torch.nn.Module, full: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        """Optimizer state, and under FSDP the restored full weights into the sharded copy too."""
        if is_sharded(trained):
            load_whole_state(trained, full.state_dict())
        load_whole_optimizer_state(trained, optimizer, state)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else 0.0


def _replay_ratio_stats(logp: torch.Tensor, mb: RolloutBatch) -> dict[str, float]:
    """Importance ratios pi_theta/pi_behaviour on replayed tokens, early vs late in the response."""
    if mb.is_replay is None or not bool(mb.is_replay.any()):
        return {}
    rows = mb.is_replay
    mask = mb.response_mask[rows]
    ratio = torch.exp((logp[rows] - mb.behavior_logp[rows]).clamp(-20, 20))
    position = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    late = mask & (position * 2 >= mb.response_lengths[rows].unsqueeze(1))
    early = mask & ~late
    stats = {"replay_ratio_mean": float(ratio[mask].mean()), "replay_ratio_max": float(ratio[mask].max())}
    if bool(early.any()) and bool(late.any()):
        stats["replay_ratio_first_half"] = float(ratio[early].mean())
        stats["replay_ratio_second_half"] = float(ratio[late].mean())
    return stats
