"""Answers in model output: the final answer of a response or worked solution (its last ``\\boxed{}``, else
GSM8K's ``#### N``), light normalisation, and equivalence (string match, else math-verify).

Timeouts: math-verify implements its timeouts with ``signal.alarm``, which fails outside the main
thread and would clobber other SIGALRM users. We call it with timeouts disabled and instead bound
the work by refusing to hand it answers longer than ``MAX_VERIFY_CHARS``.
"""

from __future__ import annotations

import functools
import logging
import re
from decimal import Decimal
from typing import Any

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


def answer_region(completion: str) -> str:
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
