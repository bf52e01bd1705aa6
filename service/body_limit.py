"""A cap on request bodies: JSON requests larger than `JSON_BODY_LIMIT` get a 413 problem.

FastAPI reads a JSON body whole before validating it, so without a cap one request could make
the API buffer gigabytes. This ASGI middleware counts the body as it arrives (a lying or absent
Content-Length does not help) and answers 413 as soon as the cap is passed, before the route runs.
Dataset uploads are exempt: `service.uploads` streams them against `max_upload_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ProblemError, problem_response

JSON_BODY_LIMIT = 1024 * 1024  # a job request is a few KiB of hyperparameters


def is_dataset_upload(scope: Scope) -> bool:
    return scope.get("method") == "POST" and scope.get("path", "").rstrip("/") == "/v1/datasets"


def too_large(limit: int) -> ProblemError:
    return ProblemError(413, f"request body exceeds {limit} bytes", slug="body-too-large", limit=limit)


class BodySizeLimit:
    """Reject request bodies over `limit` bytes with 413, except where `exempt(scope)` is true."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int = JSON_BODY_LIMIT,
        exempt: Callable[[Scope], bool] = is_dataset_upload,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more:  # bodies under the cap are small: buffer them, then replay to the app
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._reject(scope, receive, send)
                return
            messages.append(message)
            more = message.get("more_body", False)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(Request(scope), too_large(self.limit))
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)
