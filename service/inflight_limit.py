"""Bound the requests that may hold a database connection at once, so the API cannot deadlock.

A synchronous route holds its session's connection from its first query until the request ends,
including while it waits for a thread to validate the response. Once more such requests are in
flight than the pool has connections, every worker thread can end up waiting for a connection held
by a request that is itself waiting for a thread: the API stalls until the pool timeout and then
answers 503 to everything. This ASGI middleware lets at most `limit` (below the pool's capacity)
requests proceed at a time; the others wait on an asyncio semaphore, holding neither a thread nor
a connection. Event streams are not counted: they hold a connection only inside each short poll.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from service.db import POOL_CAPACITY

# Headroom for event-stream polls, probes and the metrics scrape, which take connections on a thread.
DEFAULT_LIMIT = max(1, POOL_CAPACITY - 6)


def is_event_stream(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.endswith("/stream")


class InflightLimit:
    """At most `limit` concurrent HTTP requests (event streams excepted) reach the app."""

    def __init__(self, app: ASGIApp, *, limit: int = DEFAULT_LIMIT) -> None:
        self.app = app
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_event_stream(scope):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # created lazily, inside the server's event loop
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)
