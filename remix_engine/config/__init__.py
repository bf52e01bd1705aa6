"""One validated configuration schema for a ReMix finetuning job.

The same pydantic models are used by the HTTP API (to validate a job before it is stored)
and by the engine (to run it), so a job accepted by the API can always be run. This package
imports only pydantic (and google-re2 to check regex rewards): the API process never loads torch.

One module per concern: `limits` (bounds of every count, strict types), `model_data` (model and
data), `rollout`, `reward`, `algorithm` (the algorithm's parts and presets, the optimiser),
`evaluation` (extra held-out sets), `integrations` (experiment trackers) and `train` (the whole job
and its cross-section checks). Everything is importable from `remix_engine.config` itself.

Defaults follow the reading of the paper (arXiv 2507.06892) in docs: p=0.4, N=2, m=2,
T=50, clip 0.2, beta=0.001, k3 KL, entropy bonus 0.001, token-mean aggregation.
"""

from remix_engine.config.algorithm import (
    DEFAULT_PRESET,
    PRESETS,
    AdvantageEstimatorName,
    Algorithm,
    AlgorithmConfig,
    AlgorithmPreset,
    KLEstimator,
    LossAggregation,
    OptimConfig,
    PolicyLossName,
    expand_preset,
)
from remix_engine.config.evaluation import BuiltinEvalSetSpec, EvalSetEntry, EvalSetSpec
from remix_engine.config.integrations import (
    MAX_INTEGRATIONS,
    IntegrationConfig,
    LocalTrackingRefused,
    MlflowIntegration,
    WandbIntegration,
    check_tracking_uri,
)
from remix_engine.config.limits import (
    MAX_BATCH,
    MAX_CHAT_TEMPLATE_CHARS,
    MAX_EVAL_PROMPTS,
    MAX_EVAL_SAMPLES,
    MAX_EVAL_SETS,
    MAX_GROUP_SIZE,
    MAX_KEPT_CHECKPOINTS,
    MAX_LOGGED_COMPLETIONS,
    MAX_NEW_TOKENS,
    MAX_PROMPTS_PER_STEP,
    MAX_SEED,
    MAX_STEPS,
    MAX_STOP_STRING_CHARS,
    MAX_STOP_STRINGS,
    MAX_SYSTEM_PROMPT_CHARS,
    MAX_TOP_K,
    StrictModel,
)
from remix_engine.config.model_data import (
    BUILTIN_DATASET_IDS,
    BUILTIN_MODEL_IDS,
    JOB_MODEL_PREFIX,
    JOB_MODEL_RULE,
    REASONING_DATASET_ID,
    TINY_CHAT_MODEL_ID,
    TINY_MODEL_ID,
    TINY_REASONER_MODEL_ID,
    TOY_DATASET_ID,
    DataConfig,
    ModelConfig,
    job_model_name,
    parse_job_model,
)
from remix_engine.config.reward import RewardConfig, RewardSpec
from remix_engine.config.rollout import (
    VLLM_MAX_TEMPERATURE,
    VLLM_MIN_TEMPERATURE,
    RolloutConfig,
    VllmConfig,
    check_vllm_temperature,
)
from remix_engine.config.train import DistributedConfig, LoraConfig, TrainConfig
from remix_engine.reward_specs import RewardName

__all__ = [
    "MAX_INTEGRATIONS",
    "IntegrationConfig",
    "LocalTrackingRefused",
    "MlflowIntegration",
    "WandbIntegration",
    "check_tracking_uri",
    "BUILTIN_DATASET_IDS",
    "BUILTIN_MODEL_IDS",
    "DEFAULT_PRESET",
    "JOB_MODEL_PREFIX",
    "JOB_MODEL_RULE",
    "MAX_BATCH",
    "MAX_CHAT_TEMPLATE_CHARS",
    "MAX_EVAL_PROMPTS",
    "MAX_EVAL_SAMPLES",
    "MAX_EVAL_SETS",
    "MAX_GROUP_SIZE",
    "MAX_KEPT_CHECKPOINTS",
    "MAX_LOGGED_COMPLETIONS",
    "MAX_NEW_TOKENS",
    "MAX_PROMPTS_PER_STEP",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_STOP_STRINGS",
    "MAX_STOP_STRING_CHARS",
    "MAX_SYSTEM_PROMPT_CHARS",
    "MAX_TOP_K",
    "PRESETS",
    "REASONING_DATASET_ID",
    "TINY_CHAT_MODEL_ID",
    "TINY_MODEL_ID",
    "TINY_REASONER_MODEL_ID",
    "TOY_DATASET_ID",
    "VLLM_MAX_TEMPERATURE",
    "VLLM_MIN_TEMPERATURE",
    "AdvantageEstimatorName",
    "Algorithm",
    "AlgorithmConfig",
    "AlgorithmPreset",
    "BuiltinEvalSetSpec",
    "DataConfig",
    "DistributedConfig",
    "EvalSetEntry",
    "EvalSetSpec",
    "KLEstimator",
    "LoraConfig",
    "LossAggregation",
    "ModelConfig",
    "OptimConfig",
    "PolicyLossName",
    "RewardConfig",
    "RewardName",
    "RewardSpec",
    "RolloutConfig",
    "StrictModel",
    "TrainConfig",
    "VllmConfig",
    "check_vllm_temperature",
    "expand_preset",
    "job_model_name",
    "parse_job_model",
]
