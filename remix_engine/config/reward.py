"""The reward section of a job config: a weighted sum of registered reward functions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from remix_engine.config.limits import StrictModel
from remix_engine.reward_specs import MAX_REWARD_FUNCTIONS, RewardName, check_reward_kwargs, kwargs_description

class RewardSpec(StrictModel):
    """One reward function of the weighted composition (the names and kwargs: remix_engine/reward_specs.py)."""

    name: RewardName = Field(description="Registry key of the reward function.")
    weight: float = Field(1.0, description="Weight in the weighted sum of rewards (finite).")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,  # the regex and python rewards need kwargs: none given is checked too
        description=kwargs_description(),
    )

    @field_validator("kwargs")
    @classmethod
    def _kwargs_of_the_reward(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")  # absent when the name itself was refused
        if name is not None:
            check_reward_kwargs(name, value)  # a kwargs model's errors are located under kwargs
        return value


class RewardConfig(StrictModel):
    """Rewards are a weighted sum of registered pure functions; accuracy uses the first one."""

    functions: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="math_verify")],
        min_length=1,
        max_length=MAX_REWARD_FUNCTIONS,
        description="Reward functions and weights. The first one defines 'accuracy'.",
    )
    overlong: Literal["keep", "zero", "mask"] = Field(
        "keep",
        description=(
            "What a truncated response (rollout.max_new_tokens reached without an EOS token or a stop "
            "string) trains with: 'keep' the reward it got; 'zero': its reward is set to 0 before "
            "advantages; 'mask': it contributes no loss (policy, entropy, KL and, for PPO, value terms; "
            "DAPO's overlong filtering) while its reward still counts in its group's GRPO mean and std "
            "(and its tokens in GAE whitening). Replayed responses keep their flag."
        ),
    )

