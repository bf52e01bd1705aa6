"""Rows from a dataset file's bytes: JSONL lines, a JSON list (or an object holding one), parquet rows
decoded in batches; every row measured against the limits of dataset_limits.py as it is read."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from remix_engine.data.examples import DatasetError
from remix_engine.dataset_limits import (
    MAX_NESTING_DEPTH,
    MAX_ROW_BYTES,
    TOO_DEEP,
    first_too_deep_line,
    line_too_long,
    measure_row,
    parquet_decoded_too_large,
)

JSON_LIST_KEYS = ("data", "rows", "examples", "items", "train", "test")
PARQUET_BATCH_ROWS = 64  # rows decoded at a time: bounds what a parquet file can expand to before it is measured


@dataclass(frozen=True)
class Rows:
    """The decoded records of a file, each with its line (JSONL) or row number, and its column names."""

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


def _jsonl_rows(data: bytes, source: str | None) -> Rows:
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
    return Rows(records, _columns_of(record for _, record in records), "line")


def _json_list(document: Any, source: str | None) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in JSON_LIST_KEYS:
            value = document.get(key)
            if isinstance(value, list):
                return value
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    expected = " or ".join(repr(key) for key in JSON_LIST_KEYS[:2])
    raise DatasetError(f"expected a JSON list of objects, or an object with a list under {expected}", source=source)


def _json_rows(data: bytes, source: str | None) -> Rows:
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
    return Rows(list(enumerate(items, start=1)), _columns_of(items), "row")


def _parquet_rows(data: bytes, source: str | None) -> Rows:
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
    return Rows(records, columns, "row")


def _columns_of(records: Iterator[Any] | list[Any]) -> list[str]:
    """Union of the keys of all object records, in first-seen order."""
    seen: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            seen.update(dict.fromkeys(record))
    return list(seen)


READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows}
