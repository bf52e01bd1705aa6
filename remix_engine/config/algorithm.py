"""The algorithm and optimiser sections of a job config.

The algorithm is made of explicit parts, each a field of `AlgorithmConfig`: the advantage
estimator and the policy loss (registry keys, remix_engine/components.py), mix-policy `replay` of
the last N policies' rollouts, and policy reincarnation at `reincarnation_step`. `name` is a
preset that fills in every part the config leaves out; parts the config sets win over the preset.
A validated config always holds all the parts, so the engine reads them and never `name`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from remix_engine.components import ADVANTAGE_ESTIMATOR_NAMES, POLICY_LOSS_NAMES
from remix_engine.config.limits import MAX_BATCH, MAX_STEPS, StrictModel


@dataclass(frozen=True)
class AlgorithmPreset:
    """The parts an algorithm name stands for."""

    advantage_estimator: str
    policy_loss: str
    replay: bool
    reincarnation_step: int | None


DEFAULT_REINCARNATION_STEP = 50  # T of the paper
PRESETS: dict[str, AlgorithmPreset] = {
    "remix-grpo": AlgorithmPreset("grpo", "mix_ppg", replay=True, reincarnation_step=DEFAULT_REINCARNATION_STEP),
    "remix-ppo": AlgorithmPreset("gae", "mix_ppg", replay=True, reincarnation_step=DEFAULT_REINCARNATION_STEP),
    "grpo": AlgorithmPreset("grpo", "ppo_clip", replay=False, reincarnation_step=None),
    "ppo": AlgorithmPreset("gae", "ppo_clip", replay=False, reincarnation_step=None),
}
DEFAULT_PRESET = "remix-grpo"

if TYPE_CHECKING:
    # Literals built from the registries at import time are a runtime type that pydantic validates; a
    # static checker cannot evaluate them, so it sees the plain strings they are.
    Algorithm = str
    AdvantageEstimatorName = str
    PolicyLossName = str
else:
    Algorithm = Literal[tuple(PRESETS)]
    AdvantageEstimatorName = Literal[ADVANTAGE_ESTIMATOR_NAMES]
    PolicyLossName = Literal[POLICY_LOSS_NAMES]
KLEstimator = Literal["k1", "k2", "k3"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]

_PRESET_TABLE = "; ".join(
    f"{name}: {p.advantage_estimator} + {p.policy_loss}, replay {'on' if p.replay else 'off'}, reincarnation "
    + (f"at step {p.reincarnation_step}" if p.reincarnation_step is not None else "never")
    for name, p in PRESETS.items()
)
_PPO_CLIP_IGNORES_BEHAVIOUR = (
    "ppo_clip takes the ratio against pi_old and ignores the policy that sampled each token, so replayed "
    "tokens would be trained with an importance ratio that does not correct for the older policy that "
    "generated them"
)


def expand_preset(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (an algorithm section) with every part it leaves out taken from its `name`'s preset.

    Without replay there is no Mix phase for reincarnation to end: when replay comes from a preset
    that has none (the baselines grpo and ppo), a `reincarnation_step` in `data` is ignored and the
    result holds null, as configs of the baselines have always been read. An explicit `replay: false`
    with a `reincarnation_step` is left for validation to refuse.
    """
    name = data.get("name", DEFAULT_PRESET)
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        return data  # the name's own validation reports it
    expanded = {**asdict(preset), **data}
    if expanded["replay"] is False and ("replay" not in data or "reincarnation_step" not in data):
        expanded["reincarnation_step"] = None
    return expanded


class AlgorithmConfig(StrictModel):
    """ReMix knobs: the algorithm's parts (from the `name` preset unless set) and their hyperparameters."""

    name: Algorithm = Field(
        DEFAULT_PRESET,
        description=(
            "A preset of the algorithm's parts; advantage_estimator, policy_loss, replay and reincarnation_step "
            f"set in the config override it. {_PRESET_TABLE}."
        ),
    )
    advantage_estimator: AdvantageEstimatorName = Field(
        "grpo",
        description=(
            "Registry key of the advantage estimator (remix_engine/advantages.py): 'grpo' (outcome reward "
            "normalised within its prompt group; needs rollout.group_size >= 2) or 'gae' (a learned critic, "
            "PPO). Default: the preset's."
        ),
    )
    policy_loss: PolicyLossName = Field(
        "mix_ppg",
        description=(
            "Registry key of the policy loss (remix_engine/losses.py): 'mix_ppg' (ReMix's mix-policy clipped "
            "surrogate, the ratio against the policy that sampled each token and the clip window centred at "
            "pi_k/pi_behaviour; on fresh data it equals ppo_clip) or 'ppo_clip' (PPO's, the ratio against "
            f"pi_old). Not 'ppo_clip' with replay: {_PPO_CLIP_IGNORES_BEHAVIOUR}. Default: the preset's."
        ),
    )
    replay: bool = Field(
        True,
        description=(
            "Mix-policy replay: off_policy_fraction of each batch is drawn from the rollouts of the last "
            "history_window policies, and each batch is trained utd_ratio times, until reincarnation. "
            "Needs policy_loss 'mix_ppg'. Off: on-policy training (off_policy_fraction, history_window and "
            "utd_ratio unused). Default: the preset's."
        ),
    )
    reincarnation_step: int | None = Field(
        DEFAULT_REINCARNATION_STEP,
        ge=0,
        le=MAX_STEPS,
        description=(
            "T: after step T the KL anchor becomes the current policy, replay stops and training goes "
            "on-policy. null: never. Needs replay (there is no Mix phase to end otherwise): replay false with "
            "a reincarnation_step is refused, while the baseline presets grpo and ppo ignore one (their "
            "validated config holds null). Default: the preset's."
        ),
    )
    off_policy_fraction: float = Field(
        0.4,
        ge=0.0,
        lt=1.0,
        description="p: fraction of each batch replayed from the last N policies, in [0, 1).",
    )
    history_window: int = Field(2, ge=1, le=1000, description="N: number of past policies whose rollouts are replayed.")
    utd_ratio: int = Field(2, ge=1, le=100, description="m: optimisation passes over each mixed batch (Mix phase).")
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="epsilon: half-width of the clip window.")
    kl_coef: float = Field(0.001, ge=0.0, description="beta: coefficient of the KL-Convex loss term.")
    kl_estimator: KLEstimator = Field("k3", description="Per-token KL estimator: k1, k2 or k3 (low-variance).")
    lambda_start_step: int = Field(50, ge=0, le=MAX_STEPS, description="lambda(t)=1 up to this step, then decays.")
    lambda_interval: int = Field(10, ge=1, le=MAX_STEPS, description="Steps per lambda decrement.")
    lambda_decay: float = Field(0.1, ge=0.0, le=1.0, description="Decrement of lambda per interval.")
    lambda_min: float = Field(0.5, ge=0.0, le=1.0, description="Floor of lambda(t).")
    entropy_coef: float = Field(0.001, ge=0.0, description="c: entropy bonus coefficient (subtracted from the loss).")
    loss_aggregation: LossAggregation = Field("token-mean", description="How per-token losses are reduced.")
    ppo_epochs: int = Field(1, ge=1, le=100, description="Optimisation passes per batch in the on-policy phase.")
    minibatch_size: int = Field(
        512,
        ge=1,
        le=MAX_BATCH,
        description="Responses per optimizer step; a batch is split into minibatches of this size.",
    )
    micro_batch_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH * 1024,
        description="Padded tokens per learner forward pass: a minibatch (and each no-grad log-prob pass) "
        "is sorted by length and split into micro-batches of at most this many rows x (longest prompt + "
        "longest response) tokens, whose gradients add up to the minibatch's, so short responses are not "
        "padded to the longest one; null: one pass per minibatch. Single-process jobs only (a distributed "
        "job's update keeps one pass per minibatch).",
    )
    log_inactive_kl: bool = Field(
        True,
        description="Also compute a KL-Convex term whose weight is 0 (the precedent while lambda == 1, "
        "both when kl_coef == 0) so kl_ref and kl_prev are reported every step; false saves one "
        "no-grad forward pass over the batch per inactive term.",
    )
    reset_optimizer_on_reincarnation: bool = Field(
        True, description="Start a fresh Adam state at reincarnation (the relaunch reading of the paper)."
    )
    gae_gamma: float = Field(1.0, ge=0.0, le=1.0, description="PPO: GAE discount.")
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0, description="PPO: GAE lambda.")
    value_clip: float = Field(0.2, gt=0.0, description="PPO: clip range of the value loss.")
    value_coef: float = Field(0.5, gt=0.0, description="PPO: weight of the critic loss.")

    @model_validator(mode="before")
    @classmethod
    def _parts_from_the_preset(cls, data: Any) -> Any:
        return expand_preset(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _coherent_parts(self) -> AlgorithmConfig:
        if self.replay and self.policy_loss == "ppo_clip":
            raise ValueError(
                f"algorithm.policy_loss 'ppo_clip' cannot train replayed rollouts (algorithm.replay true): "
                f"{_PPO_CLIP_IGNORES_BEHAVIOUR}; use policy_loss 'mix_ppg' or replay false"
            )
        if not self.replay and self.reincarnation_step is not None:
            raise ValueError(
                f"algorithm.reincarnation_step {self.reincarnation_step} needs algorithm.replay true: reincarnation "
                "ends the replay (Mix) phase, and without replay there is none; set reincarnation_step null"
            )
        return self

    def lambda_at(self, step: int) -> float:
        """lambda(t) = max(1 - decay * ceil(max(t - start, 0) / interval), min)."""
        over = max(step - self.lambda_start_step, 0)
        decrements = -(-over // self.lambda_interval)
        return max(1.0 - self.lambda_decay * decrements, self.lambda_min)


class OptimConfig(StrictModel):
    """Adam optimiser of the policy (and of the critic for PPO)."""

    lr: float = Field(1e-6, gt=0.0, le=1.0, description="Policy learning rate (constant).")
    critic_lr: float = Field(1e-5, gt=0.0, le=1.0, description="Critic learning rate (PPO).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas (a list of two numbers).")
    grad_clip: float = Field(1.0, gt=0.0, description="Global gradient-norm clip.")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_from_a_list(cls, value: Any) -> Any:
        # YAML and JSON have lists, not tuples; the items are still checked strictly.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError("each Adam beta must be in [0, 1)")
        return value

