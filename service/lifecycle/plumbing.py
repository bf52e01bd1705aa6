"""Shared plumbing of the lifecycle writes: retries through database outages, dialect-aware upserts,
plain-JSON cleaning of worker payloads, and the statuses that mean "an attempt owns this job".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.orm import Session

from service.models import JobStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIVE_STATUSES = (JobStatus.running.value, JobStatus.cancelling.value, JobStatus.pausing.value)
RETRY_ATTEMPTS = 5
RETRY_BASE_DELAY_S = 0.25
RETRY_MAX_DELAY_S = 4.0


def is_transient(error: BaseException) -> bool:
    """Connection drops, server restarts, failovers: worth retrying; constraint errors are not."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError)


def retry_db(operation: Callable[[], T], *, what: str, attempts: int = RETRY_ATTEMPTS, window: float = 0.0) -> T:
    """Run `operation` (one whole transaction), retrying transient errors with exponential backoff.

    Gives up after `attempts` tries or, if that is later, once `window` seconds have passed since the
    first failure: with a window, a worker rides out a database restart instead of failing its job."""
    first_failure: float | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except exc.DBAPIError as error:
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            outage = now - first_failure
            if not is_transient(error) or (attempt >= attempts and outage >= window):
                raise
            delay = min(RETRY_BASE_DELAY_S * 2 ** min(attempt - 1, 16), RETRY_MAX_DELAY_S)
            log.warning(
                "transient database error during %s (try %d, %.1fs since the first), retrying in %.2fs: %s",
                what,
                attempt,
                outage,
                delay,
                error,
            )
            time.sleep(delay)


def rowcount(result: object) -> int:
    """Rows matched by an UPDATE (CursorResult.rowcount; typed loosely by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0))


def upsert(
    session: Session,
    model: type[Any],
    values: Mapping[str, Any],
    keys: Iterable[str],
    update_columns: Iterable[str],
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, with the dialect's own insert (Postgres or SQLite)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same on_conflict_do_update API as Postgres's, all this statement uses
    else:
        raise NotImplementedError(f"upsert is not implemented for the {dialect} dialect")
    stmt = insert(model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={col: stmt.excluded[col] for col in update_columns}
    )
    session.execute(stmt)


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy/torch scalars become numbers and NaN/inf become None (Postgres rejects them)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        value = value.item()
        return jsonable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
