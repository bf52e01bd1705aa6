"""A short-lived, in-process cache of API-key lookups, so most requests authenticate without the database.

An entry maps the sha256 of a presented key to its principal and its tenant's request rate, and is
reused for at most `auth_cache_seconds` (REMIX_AUTH_CACHE_SECONDS, default 1 s). That is the bound on
revocation: a key revoked through another API process is refused at most that long after the
revocation commits; the process that revokes or rotates a key drops its entries at once (`forget_key`).
Unknown keys are not cached, so a key created a moment ago works on its first request.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")
MAX_ENTRIES = 10_000  # past it, the cache is emptied: a flood of distinct keys cannot grow memory


@dataclass(frozen=True)
class CachedKey(Generic[P]):
    principal: P
    api_key_id: uuid.UUID
    requests_per_second: float | None
    expires_at: float


class KeyCache(Generic[P]):
    def __init__(self) -> None:
        self._entries: dict[str, CachedKey[P]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> CachedKey[P] | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry.expires_at <= time.monotonic():
            return None
        return entry

    def put(
        self, key_hash: str, principal: P, api_key_id: uuid.UUID, requests_per_second: float | None, ttl: float
    ) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = CachedKey(principal, api_key_id, requests_per_second, time.monotonic() + ttl)

    def forget_key(self, api_key_id: uuid.UUID) -> None:
        """Drop every entry of this key (revoked or rotated by this process)."""
        with self._lock:
            for key_hash in [h for h, e in self._entries.items() if e.api_key_id == api_key_id]:
                del self._entries[key_hash]

    def forget_tenant_limits(self) -> None:
        """Drop everything (a tenant's quotas changed in this process: its rate applies at once here)."""
        with self._lock:
            self._entries.clear()


key_cache: KeyCache[object] = KeyCache()
