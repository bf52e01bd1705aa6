"""The whole job config (TrainConfig): its sections, LoRA, distribution, schedule and cross-section checks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from remix_engine.config.algorithm import AlgorithmConfig, OptimConfig
from remix_engine.config.evaluation import BuiltinEvalSetSpec, EvalSetEntry, EvalSetSpec
from remix_engine.config.integrations import MAX_INTEGRATIONS, IntegrationConfig
from remix_engine.config.limits import (
    MAX_EVAL_SAMPLES,
    MAX_EVAL_SETS,
    MAX_KEPT_CHECKPOINTS,
    MAX_LOGGED_COMPLETIONS,
    MAX_SEED,
    MAX_STEPS,
    StrictModel,
)
from remix_engine.config.model_data import DataConfig, ModelConfig
from remix_engine.config.reward import RewardConfig
from remix_engine.config.rollout import (
    VLLM_MAX_TEMPERATURE,
    VLLM_MIN_TEMPERATURE,
    RolloutConfig,
    check_vllm_temperature,
)
from remix_engine.eval_benchmarks import BENCHMARK_NAMES

# Module names LoRA may target: attribute names only, never import paths or code.
_MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class LoraConfig(StrictModel):
    """Low-rank adapters (peft) on the policy: only the adapter weights are trained.

    Not peft's class of the same name: this is the job's validated description of it.
    Checkpoints hold the merged full weights (a plain transformers folder) plus the adapter
    in an `adapter/` subfolder. The learner runs in eval mode so that log-probs are exact,
    so `dropout` only matters to someone who keeps training the saved adapter elsewhere.
    """

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0.0, le=1e6, description="Adapter updates are scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Adapter input dropout (off in eval mode).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Names of the linear layers that get adapters (e.g. q_proj, v_proj, gate_proj).",
    )

    @field_validator("target_modules")
    @classmethod
    def _plain_module_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(_MODULE_NAME, name)]
        if bad:
            raise ValueError(f"lora.target_modules must be plain module names like 'q_proj'; got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("lora.target_modules lists a module twice")
        return value


class DistributedConfig(StrictModel):
    """How one job uses several processes (launched by torchrun); ignored by a single process."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description=(
            "'ddp': every process holds the whole model, gradients are averaged. "
            "'fsdp': the learner's parameters, gradients and optimizer state are sharded over the "
            "processes (FSDP2); each process keeps the full weights for rollouts. Not with lora.enabled."
        ),
    )
    num_processes: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Training processes of this job on its worker machine (data parallel, launched with torchrun): "
            "one per GPU on a GPU worker (the worker refuses a job asking for more GPUs than it sees), "
            "gloo processes on a CPU worker. Per node when num_nodes > 1. Each step needs at least "
            "num_nodes * num_processes fresh prompt groups."
        ),
    )
    num_nodes: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Worker machines that train this job together (torchrun c10d rendezvous), each running "
            "num_processes processes: the worker that claims the job hosts the rendezvous and one more "
            "worker joins per extra node. The job's folder must be on storage every node reaches "
            "(a shared filesystem or the S3 store)."
        ),
    )

    @property
    def world_size(self) -> int:
        """Training processes of the job over all its nodes."""
        return self.num_nodes * self.num_processes


class TrainConfig(StrictModel):
    """A whole finetuning job: model, data, rollout, reward, algorithm, optimiser and schedule."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    total_steps: int = Field(
        100, ge=1, le=MAX_STEPS, description="Training steps (one rollout batch each)."
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seeds model init, data order and every sampled response; in [0, 2**32 - 1].",
    )
    eval_every: int = Field(
        0, ge=0, le=MAX_STEPS, description="Evaluate greedy Pass@1 every K steps; 0: only at start and end."
    )
    eval_sets: list[EvalSetEntry] = Field(
        default_factory=list,
        max_length=MAX_EVAL_SETS,
        description=(
            "Extra held-out sets, each reported on its own as eval_<name>/accuracy (and eval_<name>/avg_pass1 "
            f"with avg@k). A builtin set by name ({', '.join(BENCHMARK_NAMES)}) or as {{name, size, samples}}; "
            "or a file as {name, path, prompt_field, answer_field, size, samples} (server paths: admin keys only)."
        ),
    )
    eval_samples: int = Field(
        0,
        ge=0,
        le=MAX_EVAL_SAMPLES,
        description="k for avg@k Pass@1 with sampling (0: greedy Pass@1 only); an eval set's `samples` overrides it.",
    )
    eval_temperature: float = Field(
        0.6,
        gt=0.0,
        le=10.0,
        description=(
            "Sampling temperature of avg@k evaluation; with rollout.backend 'vllm' and eval_samples > 0 it must "
            f"be in [{VLLM_MIN_TEMPERATURE}, {VLLM_MAX_TEMPERATURE}]."
        ),
    )
    checkpoint_every: int = Field(
        10, ge=1, le=MAX_STEPS, description="Save a checkpoint every K steps (and at the end)."
    )
    keep_checkpoints: int = Field(
        2, ge=1, le=MAX_KEPT_CHECKPOINTS, description="Most recent full checkpoints kept on disk."
    )
    keep_best_checkpoints: int = Field(
        0,
        ge=0,
        le=MAX_KEPT_CHECKPOINTS,
        description="Also keep the k checkpoints with the best greedy eval accuracy; the rest are pruned.",
    )
    log_completions: int = Field(
        4, ge=0, le=MAX_LOGGED_COMPLETIONS, description="Sampled completions recorded per step for inspection."
    )
    integrations: list[IntegrationConfig] = Field(
        default_factory=list,
        max_length=MAX_INTEGRATIONS,
        description=(
            "Experiment trackers the worker mirrors the job to: {type: mlflow, tracking_uri, experiment_name, "
            "run_name, tags} or {type: wandb, project, entity, mode: offline|online, name, tags}. Config, "
            "per-step metrics, checkpoint references and the final status; credentials come from the worker's "
            "environment, never from the job."
        ),
    )

    @field_validator("eval_sets")
    @classmethod
    def _distinct_eval_set_names(
        cls, value: list[BuiltinEvalSetSpec | EvalSetSpec]
    ) -> list[BuiltinEvalSetSpec | EvalSetSpec]:
        names = [spec.name for spec in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"eval_sets: names are metric prefixes and must differ; given more than once: {twice}")
        return value

    @field_validator("eval_temperature")
    @classmethod
    def _vllm_evaluates_at_this_temperature(cls, value: float, info: ValidationInfo) -> float:
        rollout, samples = info.data.get("rollout"), info.data.get("eval_samples")
        if rollout is not None and rollout.backend == "vllm" and samples:  # avg@k samples with vLLM
            check_vllm_temperature(value, "eval_temperature")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        alg = self.algorithm
        if alg.replay and alg.off_policy_fraction > 0:
            fresh = round((1.0 - alg.off_policy_fraction) * self.rollout.prompts_per_step)
            if fresh < 1:
                raise ValueError(
                    "algorithm.off_policy_fraction leaves no fresh prompt per step: "
                    f"(1 - {alg.off_policy_fraction}) * rollout.prompts_per_step={self.rollout.prompts_per_step} < 1"
                )
        if alg.advantage_estimator == "grpo" and self.rollout.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2 for GRPO group-normalised advantages")
        if self.distributed.strategy == "fsdp" and self.lora.enabled:
            raise ValueError(
                "distributed.strategy 'fsdp' shards full-model training; with lora.enabled the adapters are "
                "small enough for 'ddp'"
            )
        processes = self.distributed.world_size
        if processes > 1 and self.fewest_fresh_groups < processes:
            asked = f"distributed.num_processes={self.distributed.num_processes}"
            lower = "distributed.num_processes"
            if self.distributed.num_nodes > 1:
                asked = f"distributed.num_nodes={self.distributed.num_nodes} x {asked}"
                lower = "distributed.num_nodes or distributed.num_processes"
            raise ValueError(
                f"{asked} needs at least {processes} fresh prompt groups per "
                f"step, but a step can have only {self.fewest_fresh_groups}: raise rollout.prompts_per_step "
                f"or lower {lower}"
            )
        return self

    @property
    def fewest_fresh_groups(self) -> int:
        """Fresh prompt groups in a step that replays the most (each training process needs one)."""
        fresh = self.rollout.prompts_per_step
        if self.algorithm.replay:
            fresh -= round(self.algorithm.off_policy_fraction * fresh)
        return fresh
