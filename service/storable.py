"""Text the database cannot store: NUL characters and unpaired UTF-16 surrogates.

Postgres rejects both in TEXT and JSONB columns, and JSON request bodies can carry them
("\\u0000", "\\ud800"). Requests are checked up front so such values become a 422 naming the
field instead of a failed INSERT.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REASON = "contains a NUL character or an unpaired surrogate, which cannot be stored"


def is_storable_text(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def first_unstorable(value: Any, path: str = "") -> str | None:
    """Dotted path of the first string (value or key) that cannot be stored, or None."""
    if isinstance(value, str):
        return None if is_storable_text(value) else (path or "body")
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not is_storable_text(key):
                return path or "body"
            found = first_unstorable(item, child)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = first_unstorable(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


MAX_CONFIG_DEPTH = 32  # a job config is a few sections deep; far deeper is an attack on recursive walks


def deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/objects in `value` nest more than `limit` levels; never recurses, whatever the depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return False
