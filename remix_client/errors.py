"""Exceptions raised by the client: one class per kind of API failure.

Every error response of the API is an RFC 9457 problem document (`type`, `title`, `status`,
`detail`, `instance` plus extension members); `RemixAPIError.from_response` maps its status to a
subclass so callers can catch exactly what they handle (e.g. `except NotFound`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import httpx


class RemixError(Exception):
    """Base class of every error raised by remix_client."""


class RemixConnectionError(RemixError):
    """The service could not be reached (after the configured retries)."""


class RemixAPIError(RemixError):
    """The API answered with an error status; fields come from its problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",  # noqa: A002 - the RFC 9457 member name
        instance: str | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.body = body or {}
        self.headers = headers or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> RemixAPIError:
        """The exception matching an error response (the body is read if it was streamed)."""
        body = _problem_body(response)
        phrase = _reason(response.status_code)
        error_cls = _BY_STATUS.get(response.status_code, RemixAPIError)
        if body.get("type") == QUOTA_EXCEEDED_TYPE:
            error_cls = QuotaExceeded
        return error_cls(
            response.status_code,
            str(body.get("title") or phrase),
            str(body.get("detail") or response.text[:500] or phrase),
            type=str(body.get("type") or "about:blank"),
            instance=body.get("instance"),
            body=body,
            headers=dict(response.headers),
        )


class BadRequest(RemixAPIError):
    """400: malformed request (e.g. an invalid cursor or dataset file)."""


class Unauthorized(RemixAPIError):
    """401: missing, unknown or revoked API key."""


class Forbidden(RemixAPIError):
    """403: the key may not do this."""


class NotFound(RemixAPIError):
    """404: no such resource for this tenant."""


class Gone(NotFound):
    """410: the resource existed but its files are no longer stored."""


class Conflict(RemixAPIError):
    """409: the resource's state forbids the operation (e.g. cancelling a finished job)."""


class PayloadTooLarge(RemixAPIError):
    """413: the upload exceeds the server's limit."""


class UnsupportedMediaType(RemixAPIError):
    """415: unsupported file format or content type."""


class ValidationFailed(RemixAPIError):
    """422: invalid fields; `errors` lists {field, message} for each."""

    @property
    def errors(self) -> list[dict[str, str]]:
        return list(self.body.get("errors") or [])

    @property
    def fields(self) -> list[str]:
        return [e.get("field", "") for e in self.errors]


class RateLimited(RemixAPIError):
    """429: too many requests (still failing after the retries)."""


class QuotaExceeded(RemixAPIError):
    """A quota of your tenant is exhausted (problem type quota-exceeded): 429 for the request rate and the
    queued-jobs limit (they free up; see `retry_after`), 403 for a spent training budget."""

    @property
    def quota(self) -> str | None:
        """Which quota: max_queued_jobs, requests_per_second, max_generated_tokens or max_device_seconds."""
        return self.body.get("quota")

    @property
    def limit(self) -> float | None:
        return self.body.get("limit")

    @property
    def usage(self) -> float | None:
        """What is used of it, where the service counts it."""
        return self.body.get("usage")


QUOTA_EXCEEDED_TYPE = "urn:remix:problem:quota-exceeded"


class ServerUnavailable(RemixAPIError):
    """502/503/504: the service or one of its dependencies is down (after the retries)."""


_BY_STATUS: dict[int, type[RemixAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    502: ServerUnavailable,
    503: ServerUnavailable,
    504: ServerUnavailable,
}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    try:
        response.read()  # a streamed error response has not been read yet
    except httpx.StreamError:
        return {}
    try:
        body = response.json()
    except ValueError:  # a proxy's HTML page, an empty body...
        return {}
    return body if isinstance(body, dict) else {}
