"""Reward functions and their weighted composition.

Every reward is a function ``fn(completions, answers, *, rows, **kwargs) -> list[float | None]``
registered by name in ``REWARDS``; the names and the kwargs each takes are declared once, in
``remix_engine/reward_specs.py`` (what job configs are validated against), and the two lists are
the same. ``rows`` holds, per completion, the dataset row of its prompt (``reward_row``: the prompt
and every other JSON-serialisable column but the answer), as TRL passes a dataset's columns to its
reward functions. ``None`` means "not applicable to this sample" (for example an empty reference
answer). A reward that can fail on one sample returns ``RewardScores`` (scores with one error
message or None per sample); ``compose_rewards`` then adds ``<name>/errors`` flags.

- ``math_verify``: the paper's binary correctness reward (DeepScaleR ``is_correct_finalanswer``):
  the answer is the last ``\\boxed{...}`` (or ``\\fbox{...}``) of the text after ``</think>`` when
  both think tags are present, otherwise of the whole response; without a box, what follows GSM8K's
  ``#### `` marker. A reference that is a worked solution (a long MATH solution, a GSM8K answer) is
  first cut to its final answer the same way. It scores 1.0 when it equals the
  reference after light normalisation, or when the ``math-verify`` package finds the two
  mathematically equivalent (fractions vs decimals, reordered sums, intervals, sets, degrees...).
  It never raises: any parse failure scores 0.0.
- ``exact_match``: the stripped completion equals the stripped reference answer.
- ``regex``: the kwarg ``pattern`` must full-match the extracted ``\\boxed{}`` answer
  (``target="boxed"``, default) or be found anywhere in the completion (``target="completion"``).
  The reference answer is not used. Patterns are RE2 syntax (google-re2), matched in linear time, so
  no pattern can backtrack for ever (``(.+.+)+#``); backreferences and lookarounds are refused.
- ``format``: 1.0 when the completion contains a non-empty ``\\boxed{}``.
- ``string_check``: OpenAI's string_check grader on a row: the completion (or its boxed answer)
  against a row field or a literal, with ``eq``, ``ne``, ``contains`` or ``ilike`` (a SQL LIKE
  pattern, translated to RE2 so it matches in linear time). A missing or non-text field is a
  per-sample error.
- ``python``: user code, sandboxed (remix_engine/sandbox.py).
- ``judge``: model as judge, on the operator's endpoint (remix_engine/judge.py).

Modules: answers.py (answer extraction and equivalence), rows.py (the row each reward sees),
functions.py (the registered rewards), composition.py (weighted totals, errors and metrics).
"""

from remix_engine.rewards.answers import GSM8K_MARK, extract_boxed, final_answer
from remix_engine.rewards.composition import (
    ERRORS_SUFFIX,
    RewardResult,
    compose_rewards,
    count_reward_errors,
    reward_metrics,
    score_rewards,
)
from remix_engine.rewards.functions import REWARDS, RewardFn
from remix_engine.rewards.rows import reward_row, row_text

__all__ = [
    "ERRORS_SUFFIX",
    "GSM8K_MARK",
    "REWARDS",
    "RewardFn",
    "RewardResult",
    "compose_rewards",
    "count_reward_errors",
    "extract_boxed",
    "final_answer",
    "reward_metrics",
    "reward_row",
    "row_text",
    "score_rewards",
]
