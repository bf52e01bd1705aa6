"""Verifiable reward functions and their weighted composition.

Every reward is a pure function ``fn(completions, answers, **kwargs) -> list[float | None]``
registered by name in ``REWARDS``; ``None`` means "not applicable to this sample" (for example
an empty reference answer). Job configs name rewards only by registry key (``RewardSpec.name``).

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

Timeouts: math-verify implements its timeouts with ``signal.alarm``, which fails outside the main
thread and would clobber other SIGALRM users. We call it with timeouts disabled and instead bound
the work by refusing to hand it answers longer than ``MAX_VERIFY_CHARS``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from remix_engine.config import RewardSpec
from remix_engine.registry import Registry
from remix_engine.sandbox import python_reward

RewardFn = Callable[..., list[float | None]]

REWARDS: Registry[RewardFn] = Registry("reward")
ERRORS_SUFFIX = "/errors"

# Longer strings skip the symbolic check (only the string fast path applies): sympy work on
# arbitrary model output is unbounded and we run without math-verify's signal timeouts.
MAX_VERIFY_CHARS = 512

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"

# The math-verify logger warns once per process that timeouts are disabled; that is deliberate here.
logging.getLogger("math_verify").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- answer extraction


def _braced_content(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``text[open_index] == '{'``, or None if unbalanced."""
    depth, index = 0, open_index
    while index < len(text):
        char = text[index]
        if char == "\\":  # skip the escaped character: \{ and \} are literal braces, not groups
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index]
        index += 1
    return None


def _box_argument(text: str, command_end: int) -> str | None:
    """Argument of a box command ending at ``command_end``: ``{...}`` or the ``\\boxed 5`` form."""
    rest = text[command_end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        return _braced_content(text, command_end + len(rest) - len(stripped))
    if rest[:1].isspace() and stripped:
        # "\boxed 42" (no braces) ends at whitespace or a closing $ like the MATH reference code.
        return re.split(r"[\s$]", stripped, maxsplit=1)[0]
    return None


def extract_boxed(text: str) -> str | None:
    """The argument of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, else None.

    Nested braces are balanced (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``). A trailing box cut off
    by the length limit is ignored in favour of the last complete one.
    """
    for match in reversed(list(_BOX_COMMAND.finditer(text))):
        argument = _box_argument(text, match.end())
        if argument is not None:
            return argument.strip()
    return None


GSM8K_MARK = "####"  # GSM8K solutions (and completions trained on them) end "... #### 72"
_GSM8K_ANSWER = re.compile(r"####\s*([^\n]+)")


def _gsm8k_answer(text: str) -> str | None:
    """What follows the last ``####`` on its line (commas of thousands dropped), or None."""
    matches = _GSM8K_ANSWER.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip().rstrip(".").replace(",", "")
    return answer or None


def extract_final_answer(text: str) -> str | None:
    """The final answer of a response or a worked solution: its last ``\\boxed{}``, else GSM8K's ``#### N``."""
    return extract_boxed(text) or _gsm8k_answer(text)


def final_answer(reference: str) -> str:
    """A reference cut to its final answer when it is a worked solution (boxed or ``####``), else as it is."""
    return extract_final_answer(reference) or reference


def _answer_region(completion: str) -> str:
    """The text after ``</think>`` when both think tags are present, else the whole completion."""
    if _THINK_OPEN in completion and _THINK_CLOSE in completion:
        return completion.rsplit(_THINK_CLOSE, 1)[1]
    return completion


# --------------------------------------------------------------------------- normalisation

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_SPACING = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad")
_DELIMITER_SIZING = re.compile(r"\\(?:left|right)(?![A-Za-z])")  # not \leftarrow


def normalize_answer(answer: str) -> str:
    """Light normalisation of presentation (MATH grading conventions) for the exact-string fast path.

    Drops whitespace, ``$``, ``\\left``/``\\right``, LaTeX spacing, ``\\text{}``-style wrappers,
    degree marks, ``\\%`` and a trailing period, and maps ``\\dfrac``/``\\tfrac`` to ``\\frac``.
    """
    text = answer.strip()
    text = _TEXT_WRAPPERS.sub(r"\1", text)
    text = _SPACING.sub("", text)
    text = _DELIMITER_SIZING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    text = text.replace("\\%", "").replace("%", "").replace("$", "")
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".")


# --------------------------------------------------------------------------- math-verify


@functools.lru_cache(maxsize=4096)
def _parse_math(answer: str) -> tuple[Any, ...]:
    """math-verify parse of one answer, cached: a group verifies many responses against one answer."""
    from math_verify import parse  # imported lazily: sympy import costs ~1 s

    try:
        return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=None))
    except Exception:  # math-verify wraps most errors, but sympy can still escape; never raise
        return ()


_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def is_equivalent(candidate: str, reference: str) -> bool:
    """True when ``candidate`` equals ``reference`` as strings after normalisation or symbolically."""
    normalized_candidate, normalized_reference = normalize_answer(candidate), normalize_answer(reference)
    if normalized_candidate == normalized_reference:
        return True
    if _PLAIN_NUMBER.fullmatch(normalized_candidate) and _PLAIN_NUMBER.fullmatch(normalized_reference):
        # Two decimal numerals: equal exactly when their values are (no need for sympy, ~1 ms a call).
        return Decimal(normalized_candidate) == Decimal(normalized_reference)
    return symbolic_equivalent(candidate, reference)


def symbolic_equivalent(candidate: str, reference: str) -> bool:
    """math-verify equivalence of two LaTeX answers (no string fast path); False on any failure."""
    if not candidate.strip() or len(candidate) > MAX_VERIFY_CHARS or len(reference) > MAX_VERIFY_CHARS:
        return False
    from math_verify import verify

    gold, predicted = _parse_math(reference), _parse_math(candidate)
    if not gold or not predicted:
        return False
    try:
        return bool(verify(list(gold), list(predicted), timeout_seconds=None))
    except Exception:
        return False


def _check_lengths(completions: Sequence[str], answers: Sequence[str]) -> None:
    if len(completions) != len(answers):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")


@REWARDS.register("math_verify")
def math_verify_reward(completions: list[str], answers: list[str], **_: Any) -> list[float | None]:
    """1.0 if the last boxed answer is equivalent to the reference, 0.0 otherwise, None for no reference."""
    _check_lengths(completions, answers)
    scores: list[float | None] = []
    for completion, answer in zip(completions, answers, strict=True):
        if not str(answer).strip():
            scores.append(None)
            continue
        extracted = extract_final_answer(_answer_region(completion))
        correct = extracted is not None and is_equivalent(extracted, final_answer(str(answer)))
        scores.append(1.0 if correct else 0.0)
    return scores


@REWARDS.register("exact_match")
def exact_match_reward(completions: list[str], answers: list[str], **_: Any) -> list[float | None]:
    """1.0 if the completion equals the answer after stripping surrounding whitespace."""
    _check_lengths(completions, answers)
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
    _check_lengths(completions, answers)
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
    _check_lengths(completions, answers)
    return [float(bool(extract_boxed(completion))) for completion in completions]


# --------------------------------------------------------------------------- composition


def _unique_key(name: str, taken: dict[str, list[float]]) -> str:
    """``name``, or ``name#2``, ``name#3``... when the same reward appears more than once."""
    key, index = name, 1
    while key in taken:
        index += 1
        key = f"{name}#{index}"
    return key


def compose_rewards(
    specs: Sequence[RewardSpec], completions: list[str], answers: list[str]
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of the rewards in ``specs``.

    Returns ``(total, per_fn)``: ``per_fn`` maps each reward name (``name#2`` for a repeat) to its
    unweighted scores, in the order of ``specs`` (the first one defines accuracy). ``None``
    (not applicable) counts as 0.0 both in ``per_fn`` and in the sum. A reward that reports
    per-sample errors (the sandboxed ``python`` reward) adds ``<name>/errors`` flags (1.0 = failed).
    """
    _check_lengths(completions, answers)
    total = [0.0] * len(completions)
    per_fn: dict[str, list[float]] = {}
    for spec in specs:
        raw = REWARDS.get(spec.name)(completions, answers, **spec.kwargs)
        if len(raw) != len(completions):
            raise ValueError(f"reward {spec.name!r} returned {len(raw)} scores for {len(completions)} completions")
        scores = [0.0 if score is None else float(score) for score in raw]
        key = _unique_key(spec.name, per_fn)
        per_fn[key] = scores
        errors = getattr(raw, "errors", None)  # sandboxed rewards report per-sample failures
        if errors is not None:
            per_fn[f"{key}{ERRORS_SUFFIX}"] = [float(error is not None) for error in errors]
        total = [acc + spec.weight * score for acc, score in zip(total, scores, strict=True)]
    return total, per_fn


def count_reward_errors(per_fn: dict[str, list[float]]) -> int:
    """Samples whose sandboxed reward failed (the ``<name>/errors`` entries of ``compose_rewards``)."""
    return int(sum(sum(flags) for key, flags in per_fn.items() if key.endswith(ERRORS_SUFFIX)))


# User code as a reward: runs in a separate, locked-down process (remix_engine/sandbox.py).
REWARDS.register("python")(python_reward)
