"""Loading examples for training and validating uploads for the API, both through `parse_examples`, so
a file the API accepts is a file a worker can train on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remix_engine.data.examples import DatasetError, DatasetSummary, Example, detect_format
from remix_engine.data.layouts import (
    ANSWER_ALIASES,
    PROMPT_ALIASES,
    detect_layout,
    lookup,
    parse_example,
    resolve_field,
)
from remix_engine.data.readers import READERS

PREVIEW_ROWS = 5
PREVIEW_CHARS = 500
SUMMARY_EXAMPLES = 2000  # examples an upload summary keeps, for the API's rendered preview and token counts


def parse_examples(
    data: bytes,
    fmt: str,
    *,
    prompt_field: str,
    answer_field: str,
    source: str | None = None,
    max_rows: int | None = None,
) -> tuple[list[Example], list[str], str, dict[str, str]]:
    """All examples, the column names, the detected layout and the fields used; raises DatasetError."""
    if fmt not in READERS:
        raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(READERS)}", source=source)
    rows = READERS[fmt](data, source)
    if not rows.records:
        raise DatasetError("empty dataset", source=source)
    if max_rows is not None and len(rows.records) > max_rows:
        raise DatasetError(f"too many rows: {len(rows.records)} > {max_rows}", source=source)
    prompt_name = resolve_field(rows, prompt_field, PROMPT_ALIASES)
    answer_name = resolve_field(rows, answer_field, ANSWER_ALIASES)
    examples = []
    for number, record in rows.records:
        try:
            examples.append(parse_example(record, prompt_name, answer_name))
        except DatasetError as error:
            raise DatasetError(error.reason, line=number, field=error.field, source=source, unit=rows.unit) from None
    layout = detect_layout([record for _, record in rows.records[:1]], prompt_name, answer_name)
    first = rows.records[0][1]
    if examples[0].messages is not None and not (isinstance(first, dict) and lookup(first, answer_name)[0]):
        answer_name = "messages (final assistant turn)"
    return examples, rows.columns, layout, {"prompt": prompt_name, "answer": answer_name}


def load_examples(path: str | Path, *, prompt_field: str = "prompt", answer_field: str = "answer") -> list[Example]:
    """Examples of a JSONL/JSON/parquet file (format from the extension); raises DatasetError."""
    path = Path(path)
    fmt = detect_format(path.name)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read file: {error.strerror or error}", source=path.name) from None
    examples, *_ = parse_examples(data, fmt, prompt_field=prompt_field, answer_field=answer_field, source=path.name)
    return examples


def validate_dataset_bytes(
    data: bytes,
    fmt: str,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    max_rows: int | None = None,
    *,
    source: str | None = None,
) -> DatasetSummary:
    """Check an uploaded dataset exactly as training will read it; raises DatasetError.

    ``max_rows`` rejects larger datasets; ``source`` (e.g. the upload's file name) prefixes errors.
    """
    examples, columns, layout, fields_used = parse_examples(
        data, fmt, prompt_field=prompt_field, answer_field=answer_field, source=source, max_rows=max_rows
    )
    preview = []
    for example in examples[:PREVIEW_ROWS]:
        row: dict[str, Any] = {"prompt": example.prompt[:PREVIEW_CHARS], "answer": example.answer[:PREVIEW_CHARS]}
        if example.messages is not None:
            row["messages"] = [
                {"role": m["role"], "content": m["content"][:PREVIEW_CHARS]} for m in example.messages[:8]
            ]
        preview.append(row)
    return DatasetSummary(
        num_rows=len(examples),
        columns=columns,
        preview=preview,
        detected_format=layout,
        fields_used=fields_used,
        examples=examples[:SUMMARY_EXAMPLES],
    )
