"""RFC 9457 problem details: every error the API returns is `application/problem+json`.

Raise `ProblemError` (or a subclass) anywhere below a route; the handlers installed by
`install_problem_handlers` also translate FastAPI's validation errors, Starlette's
HTTPExceptions, database outages (503 + Retry-After) and unexpected exceptions (500).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Non-dereferenceable URNs: stable identifiers clients can switch on.
PROBLEM_BASE = "urn:remix:problem:"
log = logging.getLogger(__name__)


class ProblemError(Exception):
    """An error rendered as a problem document; `extensions` become extra members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = PROBLEM_BASE + slug if slug else "about:blank"
        self.headers = headers or {}
        self.extensions = extensions


class NotFoundError(ProblemError):
    def __init__(self, resource: str, ident: object) -> None:
        super().__init__(404, f"{resource} {ident} not found", title="Not Found", slug="not-found")


class ConflictError(ProblemError):
    def __init__(self, detail: str, *, slug: str = "conflict") -> None:
        super().__init__(409, detail, title="Conflict", slug=slug)


class UnauthorizedError(ProblemError):
    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        challenge = 'Bearer realm="remix"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(
            401, detail, title="Unauthorized", slug="unauthorized", headers={"WWW-Authenticate": challenge}
        )


class FieldValidationError(ProblemError):
    """422 with an `errors` list of {field, message}; the detail names every field."""

    def __init__(self, errors: Sequence[dict[str, str]], *, title: str = "Validation failed") -> None:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(422, detail, title=title, slug="validation-error", errors=list(errors))


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'config', 'algorithm', 'clip_eps') -> 'config.algorithm.clip_eps'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _body_decode_error(err: Any) -> dict[str, str] | None:
    """FastAPI reports a body that is not JSON at loc ('body', <character offset>): the field is the
    body itself, and the offset (which would otherwise read as a field named '10') goes in the message."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") != "json_invalid" or loc[:1] != ("body",) or len(loc) > 2:
        return None
    if len(loc) == 2 and not isinstance(loc[1], int):
        return None  # a JSON-encoded string field: that field is at fault
    reason = (err.get("ctx") or {}).get("error") or err.get("msg", "invalid JSON")
    where = f" at character {loc[1]}" if len(loc) == 2 else ""
    return {"field": "body", "message": f"invalid JSON{where}: {reason}"}


def pydantic_errors(errors: Sequence[Any], prefix: Sequence[str] = ()) -> list[dict[str, str]]:
    """Pydantic error dicts -> [{field, message}] with dotted paths under `prefix`."""
    out = []
    for err in errors:
        decode_error = None if prefix else _body_decode_error(err)
        if decode_error is not None:
            out.append(decode_error)
            continue
        loc = [*prefix, *err.get("loc", ())]
        out.append({"field": field_path(loc) if loc else "body", "message": str(err.get("msg", "invalid"))})
    return out


def problem_response(request: Request, problem: ProblemError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **jsonable_encoder(problem.extensions),
    }
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(request, exc)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(request, FieldValidationError(pydantic_errors(exc.errors())))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
    problem = ProblemError(exc.status_code, detail, headers=dict(exc.headers or {}))
    return problem_response(request, problem)


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    retry_after = str(getattr(request.app.state, "db_retry_after_seconds", 5))
    problem = ProblemError(
        503,
        "The database is unavailable; retry later.",
        title="Service Unavailable",
        slug="database-unavailable",
        headers={"Retry-After": retry_after},
    )
    return problem_response(request, problem)


async def _on_dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        return await _on_database_unavailable(request, exc)
    return await _on_unexpected(request, exc)


async def _on_data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database refuses (e.g. text it cannot encode) that validation let through:
    # the request's data is at fault, not the server. Logged so the validation gap gets closed.
    log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc)
    problem = ProblemError(422, "The request contains a value the database cannot store.", slug="unstorable-value")
    return problem_response(request, problem)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = ProblemError(500, "An unexpected error occurred.", slug="internal-error")
    return problem_response(request, problem)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error class to a problem+json response."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(OperationalError, _on_database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _on_database_unavailable)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(DBAPIError, _on_dbapi_error)
    app.add_exception_handler(Exception, _on_unexpected)
