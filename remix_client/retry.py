"""When and how long to wait before retrying a request.

Retried: connection errors and 429/502/503/504 answers, with exponential backoff and jitter,
or exactly the server's `Retry-After` (seconds or an HTTP date) when it sends one. Whether a
request may be retried at all is the caller's decision (a POST only with an Idempotency-Key).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` extra attempts; the n-th waits about backoff_base * 2**n (capped) unless told."""

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0  # never sleep longer than this, whatever the server says

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to sleep before retry number `attempt` (0-based)."""
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(told, self.retry_after_max)
        cap = min(self.backoff_max, self.backoff_base * 2**attempt)
        # "Equal jitter": at least half the backoff, so clients spread out but still back off.
        return random.uniform(cap / 2, cap)
