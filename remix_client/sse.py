"""A minimal Server-Sent Events parser (WHATWG HTML "event stream interpretation").

Lines are grouped into messages at each blank line; `id`, `event`, `data` (multi-line, joined
by newlines) and `retry` fields are read, comments (lines starting with ':') skipped. A message
cut off by a dropped connection is never dispatched, so a resumed stream cannot yield half of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None
    retry_ms: int | None = None


def iter_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Messages of an event stream given its lines (without line terminators)."""
    event, data, ident, retry = "", [], None, None
    for line in lines:
        if line == "":
            if data or event:
                yield ServerSentEvent(event or "message", "\n".join(data), ident, retry)
            elif retry is not None:  # a bare `retry:` block still tells the reconnection delay
                yield ServerSentEvent("", "", ident, retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            ident = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
