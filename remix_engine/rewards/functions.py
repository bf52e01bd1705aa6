"""The reward functions, registered by name in ``REWARDS``: math_verify, exact_match, regex, format,
string_check, and the sandboxed python and judge rewards (implemented in sandbox.py and judge.py).

Every reward is ``fn(completions, answers, *, rows, **kwargs) -> list[float | None]``; the names and
kwargs are declared once in reward_specs.py, and importing this module fails if the two lists differ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from remix_engine.judge import judge_reward
from remix_engine.registry import Registry
from remix_engine.reward_specs import REWARD_NAMES
from remix_engine.rewards.answers import answer_region, extract_boxed, extract_final_answer, final_answer, is_equivalent
from remix_engine.rewards.rows import row_text, rows_for
from remix_engine.sandbox import RewardScores, python_reward

RewardFn = Callable[..., list[float | None]]

REWARDS: Registry[RewardFn] = Registry("reward")


def check_lengths(completions: Sequence[str], answers: Sequence[str]) -> None:
    if len(completions) != len(answers):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")


@REWARDS.register("math_verify")
def math_verify_reward(completions: list[str], answers: list[str], **_: Any) -> list[float | None]:
    """1.0 if the last boxed answer is equivalent to the reference, 0.0 otherwise, None for no reference."""
    check_lengths(completions, answers)
    scores: list[float | None] = []
    for completion, answer in zip(completions, answers, strict=True):
        if not str(answer).strip():
            scores.append(None)
            continue
        extracted = extract_final_answer(answer_region(completion))
        correct = extracted is not None and is_equivalent(extracted, final_answer(str(answer)))
        scores.append(1.0 if correct else 0.0)
    return scores


@REWARDS.register("exact_match")
def exact_match_reward(completions: list[str], answers: list[str], **_: Any) -> list[float | None]:
    """1.0 if the completion equals the answer after stripping surrounding whitespace."""
    check_lengths(completions, answers)
    return [
        None if not str(answer).strip() else float(completion.strip() == str(answer).strip())
        for completion, answer in zip(completions, answers, strict=True)
    ]


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    """A tenant's pattern, compiled by RE2: matching takes time linear in the text, whatever the pattern."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options=options)
    except re2.error as error:
        raise ValueError(f"regex reward: invalid pattern {pattern!r}: {error}") from error


@REWARDS.register("regex")
def regex_reward(
    completions: list[str], answers: list[str], *, pattern: str | None = None, target: str = "boxed", **_: Any
) -> list[float | None]:
    """1.0 if ``pattern`` full-matches the boxed answer (target="boxed") or occurs in the completion."""
    check_lengths(completions, answers)
    if not pattern:
        raise ValueError("regex reward needs a non-empty 'pattern' kwarg")
    if target not in ("boxed", "completion"):
        raise ValueError(f"regex reward: target must be 'boxed' or 'completion', got {target!r}")
    compiled = _compile(pattern)
    scores: list[float | None] = []
    for completion in completions:
        if target == "completion":
            scores.append(float(compiled.search(completion) is not None))
        else:
            extracted = extract_boxed(completion)
            scores.append(float(extracted is not None and compiled.fullmatch(extracted) is not None))
    return scores


@REWARDS.register("format")
def format_reward(completions: list[str], answers: list[str], **_: Any) -> list[float | None]:
    """1.0 if the completion contains a non-empty ``\\boxed{}`` answer."""
    check_lengths(completions, answers)
    return [float(bool(extract_boxed(completion))) for completion in completions]


# --------------------------------------------------------------------------- string_check


@functools.lru_cache(maxsize=256)
def like_matcher(pattern: str) -> Any:
    r"""A case-insensitive SQL LIKE pattern as a compiled RE2 regex (matching is linear in the text).

    ``%`` matches any run of characters (newlines too), ``_`` exactly one, and a backslash makes the
    next character literal (``\%``, ``\_``, ``\\``); everything else is literal.
    """
    import re2

    parts: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            parts.append(re2.escape("".join(literal)))
            literal.clear()

    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            literal.append(pattern[index + 1])
            index += 2
            continue
        if char in "%_":
            flush()
            if char == "_":
                parts.append(".")
            elif not parts or parts[-1] != ".*":
                parts.append(".*")
        else:
            literal.append(char)
        index += 1
    flush()
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = False
    options.dot_nl = True
    try:
        return re2.compile("".join(parts), options=options)
    except re2.error as error:  # e.g. a pattern too large for RE2's memory budget
        raise ValueError(f"string_check: cannot compile the LIKE pattern: {error}") from None


def _string_check(operation: str, text: str, reference: str) -> bool:
    if operation == "eq":
        return text == reference
    if operation == "ne":
        return text != reference
    if operation == "contains":
        return reference in text
    if operation == "ilike":
        return like_matcher(reference).fullmatch(text) is not None
    raise ValueError(f"string_check: operation must be eq, ne, contains or ilike, got {operation!r}")


@REWARDS.register("string_check")
def string_check_reward(
    completions: list[str],
    answers: list[str],
    *,
    operation: str,
    field: str | None = None,
    reference: str | None = None,
    target: str = "completion",
    rows: Sequence[Mapping[str, Any]] | None = None,
    **_: Any,
) -> RewardScores:
    """1.0 when the input (completion or boxed answer, stripped) passes `operation` against the reference
    (`reference`, else the row's `field`, else the answer, stripped); a missing field is a sample's error."""
    check_lengths(completions, answers)
    if target not in ("completion", "boxed"):
        raise ValueError(f"string_check: target must be 'completion' or 'boxed', got {target!r}")
    source = field or "answer"
    scores: list[float | None] = []
    errors: list[str | None] = []
    for completion, answer, row in zip(completions, answers, rows_for(rows, len(completions)), strict=True):
        expected: str | None
        if reference is not None:
            expected = reference
        elif source == "answer":
            expected = str(answer)
        elif source not in row:
            expected = None
            errors.append(f"string_check: the row has no field {source!r}")
        else:
            expected = row_text(row[source])
            if expected is None:
                errors.append(f"string_check: field {source!r} is {type(row[source]).__name__}, not text or a number")
        if expected is None:
            scores.append(None)
            continue
        text = extract_boxed(answer_region(completion)) if target == "boxed" else completion
        try:
            passed = text is not None and _string_check(operation, text.strip(), expected.strip())
        except ValueError as error:
            scores.append(None)
            errors.append(str(error))
            continue
        scores.append(float(passed))
        errors.append(None)
    return RewardScores(scores, errors)


# User code as a reward: runs in a separate, locked-down process (remix_engine/sandbox.py).
REWARDS.register("python")(python_reward)
# A model as judge, on the operator's OpenAI-compatible endpoint (remix_engine/judge.py).
REWARDS.register("judge")(judge_reward)

if set(REWARDS.names()) != set(REWARD_NAMES):  # pragma: no cover - a reward added to one list only
    raise RuntimeError(
        f"rewards/functions.py implements {REWARDS.names()} but reward_specs.py declares {sorted(REWARD_NAMES)}"
    )
