"""Keep a client's connection open after a server error that was fully answered.

Starlette's ServerErrorMiddleware sends the 500 problem (built by `service.errors`, which also logs
the traceback) and then re-raises the exception so that servers can log it; uvicorn answers that
by closing the connection, and a client reusing its keep-alive connection sees the next request
fail with a reset. This outermost layer swallows such an exception once the response is complete.
An exception before or in the middle of a response still propagates: a connection whose response
was cut short has to be closed.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class KeepAliveAfterAnsweredErrors:
    """ASGI wrapper: an exception raised after its response was completely sent stops here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def send_tracking(message: Message) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            if not answered:
                raise
            # Already logged with its traceback by the 500 handler (service.errors._on_unexpected).
            log.debug("exception after a complete response not re-raised, so the connection stays open")
