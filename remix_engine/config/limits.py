"""Bounds of every count of a job config, and the strictness every section of the schema shares.

Every count has an upper bound that real jobs never reach, so a config that validates can be run.
Types are strict everywhere: a bool is not a number, a string is not a number, an int is not a
bool; floats accept ints but never NaN or infinity.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Upper bounds of counts: far above any real RFT job, low enough that nothing explodes on a worker.
MAX_SEED = 2**32 - 1  # numpy (and vLLM, which seeds numpy) takes seeds below 2**32
MAX_STEPS = 100_000  # total_steps and every step-valued knob
MAX_PROMPTS_PER_STEP = 8192
MAX_GROUP_SIZE = 256
MAX_NEW_TOKENS = 65536
MAX_BATCH = 65536  # rollout.generation_batch_size, algorithm.minibatch_size
MAX_TOP_K = 2**20  # above any vocabulary; top_k >= vocabulary size filters nothing
MAX_EVAL_PROMPTS = 100_000
MAX_KEPT_CHECKPOINTS = 100
MAX_LOGGED_COMPLETIONS = 64
MAX_EVAL_SETS = 16
MAX_EVAL_SAMPLES = 64  # k of avg@k

MAX_STOP_STRINGS = 8
MAX_STOP_STRING_CHARS = 64

MAX_CHAT_TEMPLATE_CHARS = 64 * 1024
MAX_SYSTEM_PROMPT_CHARS = 16 * 1024


class StrictModel(BaseModel):
    """Base of every section of the job config."""

    # strict: no coercion (true is not 1, "3" is not 3, 2.0 is not an int); floats still take ints.
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), strict=True, allow_inf_nan=False
    )
