"""What a dataset is made of: `Example` (one prompt with its reference answer), `DatasetSummary` (what
the API reports of an upload), `DatasetError` (where and why a dataset cannot be used), and the file
formats by extension."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DatasetFormat = Literal["jsonl", "json", "parquet"]

_EXTENSIONS: dict[str, DatasetFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DatasetError(ValueError):
    """A dataset that cannot be used, with where (``line``, ``field``) and why (``reason``).

    ``line`` is the 1-based line of a JSONL file (or of a JSON syntax error) or the 1-based row of
    a JSON list / parquet table; None when the problem concerns the whole file.
    """

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        field: str | None = None,
        source: str | None = None,
        unit: str = "line",
    ) -> None:
        self.reason, self.line, self.field, self.source = reason, line, field, source
        where = " ".join(part for part in (source, f"{unit} {line}" if line is not None else None) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True)
class Example:
    """One training prompt with its verifiable reference answer.

    ``messages`` holds every turn when the row's prompt is a chat conversation (then ``prompt`` is
    the text of its last user turn, for previews); None for a plain-text prompt.
    """

    prompt: str
    answer: str
    extra: dict[str, Any] = field(default_factory=dict)
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class DatasetSummary:
    """What the API reports about an uploaded dataset."""

    num_rows: int
    columns: list[str]
    preview: list[dict[str, Any]]  # first rows: {"prompt", "answer"}, each cut to PREVIEW_CHARS
    detected_format: str = "prompt-answer"  # see detect_layout
    fields_used: dict[str, str] = field(default_factory=dict)  # {"prompt": column, "answer": column}
    examples: list[Example] = field(default_factory=list, repr=False)


def detect_format(filename: str | Path) -> DatasetFormat:
    """Dataset format from a file name's extension (.jsonl/.ndjson, .json, .parquet/.pq)."""
    suffix = Path(str(filename)).suffix.lower()
    if suffix not in _EXTENSIONS:
        supported = ", ".join(sorted(_EXTENSIONS))
        raise DatasetError(f"unsupported file extension {suffix or '(none)'!r}; use one of {supported}")
    return _EXTENSIONS[suffix]
