"""Prompt/answer datasets: loading for training and validation of uploads for the API.

Formats: JSONL (one object per line), JSON (a list of objects, or an object holding that list
under "data", "rows", "examples", "items", "train" or "test") and parquet. The bytes are parsed
once by ``_parse_examples``; ``load_examples`` (engine) and ``validate_dataset_bytes`` (API) both
use it, so a file the API accepts is a file a worker can train on.

Field resolution: the requested ``prompt_field`` / ``answer_field`` are used when the dataset has
them (a dotted name such as ``reward_model.ground_truth`` reads a nested object). When a requested
field is missing from every row, known aliases are tried in order, so public benchmark files load
as-is:

- prompt: ``problem``, ``question``, ``prompt``, ``messages``;
- answer: ``answer``, ``final_answer``, ``reference_answer``, ``reference``, ``ground_truth``,
  ``reward_model.ground_truth`` (verl layout), then ``solution``, from which the last ``\\boxed{}``
  is taken; for chat rows without any of these, the final assistant turn.

Values: a prompt given as a list of chat messages (OpenAI ``messages``, verl) keeps every turn in
``Example.messages`` (content as text or a list of text parts); ``Example.prompt`` is then the text of
its last user turn. A reference that is a worked solution is cut to its final answer: its last
``\\boxed{}``, or what follows GSM8K's ``####`` (``final_answer``). Numeric answers become strings
(``142.0`` -> ``"142"``); a list of answers (alternative forms of one answer, as in Minerva) keeps the
first and stores the rest in ``extra["answer_alternatives"]``. Every other column of a row is kept in
``Example.extra``. ``detect_layout`` names the public layout a file follows (openai-chat, verl, gsm8k,
math, prompt-answer) for the upload preview.

Limits: a row may nest at most 64 levels, a JSONL line (or a JSON/parquet row's text) may be at
most 1 MiB, one text value at most 256 Ki characters, and a parquet file may decode to at most
512 MiB (``remix_engine.dataset_limits``), so a hostile file is a DatasetError, never a crash.

Errors are ``DatasetError`` naming the file, the line (JSONL) or row (JSON, parquet), counted from 1,
and the reason.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from remix_engine.dataset_limits import (
    MAX_NESTING_DEPTH,
    MAX_ROW_BYTES,
    TOO_DEEP,
    first_too_deep_line,
    line_too_long,
    measure_row,
    parquet_decoded_too_large,
)
from remix_engine.chat_format import ROLES, normalise_messages
from remix_engine.rewards import GSM8K_MARK, extract_boxed, final_answer

DatasetFormat = Literal["jsonl", "json", "parquet"]

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
JSON_LIST_KEYS = ("data", "rows", "examples", "items", "train", "test")
PREVIEW_ROWS = 5
PREVIEW_CHARS = 500
SUMMARY_EXAMPLES = 2000  # examples an upload summary keeps, for the API's rendered preview and token counts
PARQUET_BATCH_ROWS = 64  # rows decoded at a time: bounds what a parquet file can expand to before it is measured

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


# --------------------------------------------------------------------------- rows from bytes


@dataclass(frozen=True)
class _Rows:
    records: list[tuple[int, Any]]  # (line or row number, decoded record)
    columns: list[str]
    unit: str  # "line" (JSONL) or "row" (JSON, parquet)


def _decode_utf8(data: bytes, source: str | None) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError("not valid UTF-8", line=line, source=source) from None


def _json_reason(error: json.JSONDecodeError) -> str:
    return f"invalid JSON: {error.msg} (column {error.colno})"


def _check_row(record: Any, number: int, unit: str, source: str | None) -> int:
    """The row's size (see ``dataset_limits.measure_row``); DatasetError if it breaks a limit."""
    size, reason = measure_row(record)
    if reason is not None:
        raise DatasetError(reason, line=number, source=source, unit=unit)
    return size


def _jsonl_rows(data: bytes, source: str | None) -> _Rows:
    text = _decode_utf8(data, source)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing newline) are not rows
        # UTF-8 takes at most 4 bytes a character: shorter lines need not be encoded to be measured.
        too_long = line_too_long(len(line.encode("utf-8"))) if len(line) * 4 > MAX_ROW_BYTES else None
        if too_long is not None:
            raise DatasetError(too_long, line=number, source=source)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(_json_reason(error), line=number, source=source) from None
        except RecursionError:
            raise DatasetError(TOO_DEEP, line=number, source=source) from None
        except ValueError as error:  # e.g. an integer of more than 4300 digits
            raise DatasetError(f"invalid JSON: {error}", line=number, source=source) from None
        _check_row(record, number, "line", source)
        records.append((number, record))
    return _Rows(records, _columns_of(record for _, record in records), "line")


def _json_list(document: Any, source: str | None) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in JSON_LIST_KEYS:
            if isinstance(document.get(key), list):
                return document[key]
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    expected = " or ".join(repr(key) for key in JSON_LIST_KEYS[:2])
    raise DatasetError(f"expected a JSON list of objects, or an object with a list under {expected}", source=source)


def _json_rows(data: bytes, source: str | None) -> _Rows:
    text = _decode_utf8(data, source)
    if not text.strip():
        raise DatasetError("empty dataset", source=source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(_json_reason(error), line=error.lineno, source=source) from None
    except RecursionError:
        # The rows' list and the object around it are two levels that do not count against a row.
        line = first_too_deep_line(text, MAX_NESTING_DEPTH + 2)
        raise DatasetError(TOO_DEEP, line=line, source=source) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise DatasetError(f"invalid JSON: {error}", source=source) from None
    items = _json_list(document, source)
    for number, item in enumerate(items, start=1):
        _check_row(item, number, "row", source)
    return _Rows(list(enumerate(items, start=1)), _columns_of(items), "row")


def _parquet_rows(data: bytes, source: str | None) -> _Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records: list[tuple[int, Any]] = []
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        metadata = parquet.metadata
        declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        too_large = parquet_decoded_too_large(declared)
        # Read in small batches and measured row by row: a dictionary-encoded file declares (and
        # decodes to) little in Arrow but expands to its full size as Python rows.
        decoded = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            if too_large is not None:
                raise DatasetError(too_large, source=source)
            for row in batch.to_pylist():
                decoded += _check_row(row, len(records) + 1, "row", source)
                records.append((len(records) + 1, row))
            too_large = parquet_decoded_too_large(decoded)
        if too_large is not None:
            raise DatasetError(too_large, source=source)
        columns = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"not a valid parquet file: {error}", source=source) from None
    return _Rows(records, columns, "row")


def _columns_of(records: Iterator[Any] | list[Any]) -> list[str]:
    """Union of the keys of all object records, in first-seen order."""
    seen: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            seen.update(dict.fromkeys(record))
    return list(seen)


_READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows}


# --------------------------------------------------------------------------- fields and values


def _lookup(record: dict[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) for a top-level key, or a dotted path into nested objects."""
    if name in record:
        return True, record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _resolve_field(rows: _Rows, requested: str, aliases: tuple[str, ...]) -> str:
    """The requested field if any row has it, else the first alias that some row has."""
    for name in (requested, *aliases):
        if any(isinstance(rec, dict) and _lookup(rec, name)[0] for _, rec in rows.records):
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


def _example(record: Any, prompt_field: str, answer_field: str) -> Example:
    """One Example, or a DatasetError without location (the caller adds it)."""
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}")
    found_prompt, raw_prompt = _lookup(record, prompt_field)
    found_answer, raw_answer = _lookup(record, answer_field)
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
    if answer_name == "reward_model.ground_truth" and isinstance(_lookup(first, prompt_name)[1], list):
        return "verl"
    if prompt_name == "messages":
        return "openai-chat"
    answer = _lookup(first, answer_name)[1]
    if prompt_name == "question" and isinstance(answer, str) and GSM8K_MARK in answer:
        return "gsm8k"
    if prompt_name == "problem" and answer_name in ("answer", "solution"):
        return "math"
    return "prompt-answer"


def _parse_examples(
    data: bytes,
    fmt: str,
    *,
    prompt_field: str,
    answer_field: str,
    source: str | None = None,
    max_rows: int | None = None,
) -> tuple[list[Example], list[str], str, dict[str, str]]:
    """All examples, the column names, the detected layout and the fields used; raises DatasetError."""
    if fmt not in _READERS:
        raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(_READERS)}", source=source)
    rows = _READERS[fmt](data, source)
    if not rows.records:
        raise DatasetError("empty dataset", source=source)
    if max_rows is not None and len(rows.records) > max_rows:
        raise DatasetError(f"too many rows: {len(rows.records)} > {max_rows}", source=source)
    prompt_name = _resolve_field(rows, prompt_field, PROMPT_ALIASES)
    answer_name = _resolve_field(rows, answer_field, ANSWER_ALIASES)
    examples = []
    for number, record in rows.records:
        try:
            examples.append(_example(record, prompt_name, answer_name))
        except DatasetError as error:
            raise DatasetError(error.reason, line=number, field=error.field, source=source, unit=rows.unit) from None
    layout = detect_layout([record for _, record in rows.records[:1]], prompt_name, answer_name)
    first = rows.records[0][1]
    if examples[0].messages is not None and not (isinstance(first, dict) and _lookup(first, answer_name)[0]):
        answer_name = "messages (final assistant turn)"
    return examples, rows.columns, layout, {"prompt": prompt_name, "answer": answer_name}


# --------------------------------------------------------------------------- public entry points


def load_examples(path: str | Path, *, prompt_field: str = "prompt", answer_field: str = "answer") -> list[Example]:
    """Examples of a JSONL/JSON/parquet file (format from the extension); raises DatasetError."""
    path = Path(path)
    fmt = detect_format(path.name)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read file: {error.strerror or error}", source=path.name) from None
    examples, *_ = _parse_examples(data, fmt, prompt_field=prompt_field, answer_field=answer_field, source=path.name)
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
    examples, columns, layout, fields_used = _parse_examples(
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
