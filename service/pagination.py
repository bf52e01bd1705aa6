"""Opaque cursors for keyset pagination over (created_at, id), newest first.

A cursor is base64url JSON of the last item's sort key; clients pass it back as `after`.
Keyset pagination stays correct while new rows are inserted, unlike OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, and_, or_

from service.errors import ProblemError


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = json.dumps({"t": as_utc(created_at).isoformat(), "id": str(ident)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, param: str = "after") -> tuple[datetime, uuid.UUID]:
    """Parse a cursor; anything malformed is a 400 naming the parameter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return as_utc(datetime.fromisoformat(data["t"])), uuid.UUID(data["id"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ProblemError(400, f"{param}: not a valid pagination cursor", slug="invalid-cursor", field=param) from exc


def older_than(
    created_col: Any, id_col: Any, cursor: tuple[datetime, uuid.UUID] | tuple[BindParameter[Any], BindParameter[Any]]
) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (created_at DESC, id DESC) order; the cursor's values or bound
    parameters that will hold them."""
    created_at, ident = cursor
    return or_(created_col < created_at, and_(created_col == created_at, id_col < ident))
