"""Fields and values of dataset rows: which columns hold the prompt and the answer (requested names, then
known aliases), how a row becomes an `Example`, and which public layout a file follows."""

from __future__ import annotations

from typing import Any

from remix_engine.chat_format import ROLES, normalise_messages
from remix_engine.data.examples import DatasetError, Example
from remix_engine.data.readers import Rows
from remix_engine.rewards.answers import GSM8K_MARK, extract_boxed, final_answer

PROMPT_ALIASES = ("problem", "question", "prompt", "messages")
ANSWER_ALIASES = (
    "answer",
    "final_answer",
    "reference_answer",
    "reference",
    "ground_truth",
    "reward_model.ground_truth",
    "solution",
)
BOXED_ONLY_FIELDS = frozenset({"solution"})  # full worked solutions: only their \boxed{} is the answer


def lookup(record: dict[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) for a top-level key, or a dotted path into nested objects."""
    if name in record:
        return True, record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def resolve_field(rows: Rows, requested: str, aliases: tuple[str, ...]) -> str:
    """The requested field if any row has it, else the first alias that some row has."""
    for name in (requested, *aliases):
        if any(isinstance(rec, dict) and lookup(rec, name)[0] for _, rec in rows.records):
            return name
    return requested  # absent everywhere: the first row reports it missing


def _prompt_text(value: Any) -> str | None:
    """A plain-text prompt: a non-empty string."""
    return value if isinstance(value, str) and value.strip() else None


def _scalar_answer(value: Any) -> str | None:
    if isinstance(value, bool):
        return None  # a bool is an int in Python, but never a meaningful math answer
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 142.0 -> "142", so the string fast path of the verifier applies
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _answer_text(value: Any, field_name: str) -> tuple[str | None, list[str]]:
    """(answer, alternative forms) from a string, a number or a list of equivalent answers."""
    if field_name in BOXED_ONLY_FIELDS:
        boxed = extract_boxed(value) if isinstance(value, str) else None
        return (boxed or None), []
    if isinstance(value, list):
        forms = [final_answer(text) for text in map(_scalar_answer, value) if text is not None]
        return (forms[0], forms[1:]) if forms and len(forms) == len(value) else (None, [])
    answer = _scalar_answer(value)
    return (final_answer(answer) if answer is not None else None), []


def parse_example(record: Any, prompt_field: str, answer_field: str) -> Example:
    """One Example, or a DatasetError without location (the caller adds it)."""
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}")
    found_prompt, raw_prompt = lookup(record, prompt_field)
    found_answer, raw_answer = lookup(record, answer_field)
    if not found_prompt:
        raise DatasetError(f"missing field {prompt_field!r}", field=prompt_field)
    messages = None
    if isinstance(raw_prompt, list):
        messages = normalise_messages(raw_prompt)
        if messages is None:
            raise DatasetError(
                f"field {prompt_field!r} must be a list of chat messages, each with a role "
                f"({', '.join(ROLES)}) and text content (a string or a list of text parts)",
                field=prompt_field,
            )
        if not found_answer and messages[-1]["role"] == "assistant" and len(messages) > 1:
            # OpenAI chat rows carry the reference as the final assistant turn.
            found_answer, raw_answer, answer_field = True, messages[-1]["content"], "messages"
            messages = messages[:-1]
        users = [m["content"] for m in messages if m["role"] == "user"]
        prompt = users[-1] if users and users[-1].strip() else None
    else:
        prompt = _prompt_text(raw_prompt)
    if not found_answer:
        raise DatasetError(f"missing field {answer_field!r}", field=answer_field)
    if prompt is None:
        expected = "a user turn with text" if messages is not None else "a non-empty string"
        raise DatasetError(f"field {prompt_field!r} must be {expected}", field=prompt_field)
    answer, alternatives = _answer_text(raw_answer, answer_field)
    if answer is None:
        kind = "contain a \\boxed{} answer" if answer_field in BOXED_ONLY_FIELDS else "be a non-empty string or number"
        raise DatasetError(f"field {answer_field!r} must {kind}", field=answer_field)
    used = {prompt_field.split(".")[0], answer_field.split(".")[0]}
    extra = {key: value for key, value in record.items() if key not in used}
    if alternatives:
        extra["answer_alternatives"] = alternatives
    return Example(prompt=prompt, answer=answer, extra=extra, messages=tuple(messages) if messages else None)


def detect_layout(records: list[Any], prompt_name: str, answer_name: str) -> str:
    """Which public dataset layout the rows follow, as shown in the upload preview.

    ``openai-chat`` (``messages`` rows), ``verl`` (a chat-message prompt list and
    ``reward_model.ground_truth``), ``gsm8k`` (``question`` and a worked ``answer`` ending
    ``#### N``), ``math`` (``problem`` with ``answer`` and/or a boxed ``solution``: MATH, MATH500,
    DeepScaleR), or ``prompt-answer`` for any other layout.
    """
    first = next((r for r in records if isinstance(r, dict)), {})
    if answer_name == "reward_model.ground_truth" and isinstance(lookup(first, prompt_name)[1], list):
        return "verl"
    if prompt_name == "messages":
        return "openai-chat"
    answer = lookup(first, answer_name)[1]
    if prompt_name == "question" and isinstance(answer, str) and GSM8K_MARK in answer:
        return "gsm8k"
    if prompt_name == "problem" and answer_name in ("answer", "solution"):
        return "math"
    return "prompt-answer"
