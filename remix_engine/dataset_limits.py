"""Shape and size limits of dataset rows, so a hostile file is refused instead of crashing a parser.

A prompt/answer row is a flat object of short texts; anything far from that is either a mistake
or an attack. The limits (checked by ``remix_engine.data`` for every format, in the API's upload
validation and in the worker's loader alike):

- ``MAX_NESTING_DEPTH`` (64): lists/objects nested inside one row, the row itself being level 1.
  Python's JSON parser recurses per level and fails near 1000 levels with a RecursionError (a
  2 KB line of brackets is enough), and every later recursive walk would fail the same way.
- ``MAX_ROW_BYTES`` (1 MiB): one JSONL line, in bytes, checked before the line is parsed; for JSON
  and parquet rows, the characters of the row's keys and texts (other scalars count 8 each).
- ``MAX_CELL_CHARS`` (256 Ki characters): one text value or key anywhere in a row.
- ``MAX_PARQUET_DECODED_BYTES`` (512 MiB): what a parquet file may decode to (its declared
  uncompressed size, and the size of its rows as they are read); a few MiB of compressed,
  dictionary-encoded repetition can otherwise expand to gigabytes in memory.

The functions here report which limit a value breaks (a reason string, or None) and never
recurse, so they are safe on any input; ``remix_engine.data`` turns a reason into a
``DatasetError`` that names the line or row.
"""

from __future__ import annotations

import re
from typing import Any

MIB = 1024 * 1024
MAX_NESTING_DEPTH = 64
MAX_ROW_BYTES = 1 * MIB
MAX_CELL_CHARS = 256 * 1024
MAX_PARQUET_DECODED_BYTES = 512 * MIB
SCALAR_SIZE = 8  # what a number, bool or null counts towards a row's size

TOO_DEEP = f"nested more than {MAX_NESTING_DEPTH} levels deep"
# A JSON string literal (escapes included) or one bracket: enough to track nesting depth.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def line_too_long(size_bytes: int) -> str | None:
    """Why a JSONL line of this many bytes is refused, or None."""
    if size_bytes > MAX_ROW_BYTES:
        return f"line is {size_bytes} bytes, over the limit of {MAX_ROW_BYTES} bytes"
    return None


def measure_row(record: Any) -> tuple[int, str | None]:
    """(size, why the row breaks a limit or None) of a decoded row: depth, a text's length, its size.

    The size counts the characters of keys and texts and SCALAR_SIZE per other scalar. The walk
    uses an explicit stack: no recursion, whatever the depth."""
    size = 0
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > MAX_CELL_CHARS:
                return size, f"a text value is {len(value)} characters, over the limit of {MAX_CELL_CHARS}"
            size += len(value)
        elif isinstance(value, dict | list | tuple):
            if depth > MAX_NESTING_DEPTH:
                return size, TOO_DEEP
            if isinstance(value, dict):
                for key, item in value.items():
                    stack.append((str(key), depth))  # a key is text at its object's level
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        else:
            size += SCALAR_SIZE
        if size > MAX_ROW_BYTES:
            return size, f"row is larger than the limit of {MAX_ROW_BYTES} bytes of text"
    return size, None


def first_too_deep_line(text: str, allowed_depth: int) -> int | None:
    """1-based line where brackets first nest deeper than `allowed_depth` in a JSON text, or None.

    Only called once the parser has failed on depth, and it stops at that point, so a file
    pays for the scan only up to its offending row."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > allowed_depth:
                return text.count("\n", 0, match.start()) + 1
        elif token in ("]", "}"):
            depth -= 1
    return None


def parquet_decoded_too_large(decoded_bytes: int) -> str | None:
    """Why a parquet file that decodes to this many bytes is refused, or None."""
    if decoded_bytes > MAX_PARQUET_DECODED_BYTES:
        return (
            f"parquet data decodes to more than {MAX_PARQUET_DECODED_BYTES} bytes "
            f"(the limit on an uncompressed dataset)"
        )
    return None
