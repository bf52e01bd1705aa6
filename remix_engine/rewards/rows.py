"""The dataset row a reward sees of each sample: the prompt and its other JSON-serialisable columns."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _json_value(value: Any) -> bool:
    """Whether `value` crosses a process boundary as JSON unchanged (finite numbers, str keys)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def reward_row(prompt: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a reward sees of a dataset row: the prompt (under "prompt", before the prompt template) and
    every other column but the answer (``Example.extra``) whose value is JSON-serialisable.

    A column literally named "prompt" that is not the prompt column is shadowed by the prompt.
    """
    row = {key: value for key, value in extra.items() if isinstance(key, str) and _json_value(value)}
    row["prompt"] = prompt
    return row


def rows_for(rows: Sequence[Mapping[str, Any]] | None, count: int) -> list[Mapping[str, Any]]:
    """One row per completion: the rows given (checked against the count), or empty rows without them."""
    if rows is None:
        return [{}] * count
    if len(rows) != count:
        raise ValueError(f"got {len(rows)} rows for {count} completions")
    return list(rows)


def row_text(value: Any) -> str | None:
    """A row value as text: strings as they are, numbers and booleans as JSON writes them; None for
    anything else (lists, objects, null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None
