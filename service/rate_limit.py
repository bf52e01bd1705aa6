"""Per-tenant request rate limits: a token bucket per tenant, in Redis so every API worker shares it.

A bucket holds up to `rate x burst_seconds` tokens and refills at `rate` per second; a request takes
one token or is refused with the seconds until one is available (sent as Retry-After). The bucket is
updated by one Lua script, atomic in Redis, using Redis's own clock so API hosts need not agree on
time. Without Redis configured (embedded single-process deployments) the buckets live in the process.
If Redis cannot be reached the request is let through and logged: a rate-limit outage must not take
the API down with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "remix:ratelimit:"
REDIS_TIMEOUT_SECONDS = 0.25

# KEYS[1]: bucket hash {tokens, at_us}; ARGV: rate (tokens/s), capacity. Returns {allowed, wait_us}.
TOKEN_BUCKET = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at_us')
local tokens = tonumber(state[1]) or capacity
local at_us = tonumber(state[2]) or now_us
tokens = math.min(capacity, tokens + math.max(0, now_us - at_us) * rate / 1000000)
local allowed = 0
local wait_us = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_us = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_us', tostring(now_us))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, wait_us}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int  # whole seconds, at least 1, when refused


def _decision(allowed: bool, wait_seconds: float) -> Decision:
    return Decision(allowed, 0 if allowed else max(1, math.ceil(wait_seconds)))


class RedisRateLimiter:
    def __init__(self, url: str) -> None:
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._script = client.register_script(TOKEN_BUCKET)

    def take(self, tenant_id: uuid.UUID, rate: float, burst_seconds: float) -> Decision:
        capacity = max(1.0, rate * burst_seconds)
        try:
            allowed, wait_us = self._script(keys=[f"{KEY_PREFIX}{tenant_id}"], args=[repr(rate), repr(capacity)])
        except redis.RedisError as error:
            log.warning("rate limit not applied, Redis unavailable: %s", error)
            return Decision(True, 0)
        return _decision(bool(allowed), int(wait_us) / 1e6)


class LocalRateLimiter:
    """The same bucket in this process only (no Redis configured)."""

    def __init__(self) -> None:
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: uuid.UUID, rate: float, burst_seconds: float) -> Decision:
        capacity = max(1.0, rate * burst_seconds)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(tenant_id, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[tenant_id] = (tokens, now)
        return _decision(allowed, (1 - tokens) / rate)


RateLimiter = RedisRateLimiter | LocalRateLimiter


@lru_cache(maxsize=8)
def get_rate_limiter(redis_url: str | None) -> RateLimiter:
    """One limiter per Redis URL per process (None: the in-process buckets)."""
    return RedisRateLimiter(redis_url) if redis_url else LocalRateLimiter()
