"""Who may read GET /metrics: the operator's scraper, never a tenant.

The metrics count jobs by state, list the active jobs with their workers and show the queue depth,
across every tenant, so a tenant's API key is not enough. Accepted, as `Authorization: Bearer ...`:

- the operator token `REMIX_METRICS_TOKEN` (compared in constant time; no database access), which
  is what a Prometheus scrape config sends;
- an admin API key.

`REMIX_METRICS_UNAUTHENTICATED=true` serves the metrics to anyone, for an API port tenants cannot
reach. Otherwise missing or unknown credentials get 401 and a tenant's key 403, as problem+json.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import SessionDep
from service.errors import ProblemError, UnauthorizedError
from service.repositories.tenants import find_active_key
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, scheme_name="MetricsToken")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _is_metrics_token(presented: str, settings: Settings) -> bool:
    if settings.metrics_token is None:
        return False
    expected = settings.metrics_token.get_secret_value().encode("utf-8")
    return hmac.compare_digest(presented.encode("utf-8"), expected)


def metrics_access(settings: Settings) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through to /metrics or raises a 401/403 problem."""

    def require_operator(session: SessionDep, credentials: Credentials) -> None:
        if settings.metrics_unauthenticated:
            return
        if credentials is None:
            raise UnauthorizedError(
                "GET /metrics needs 'Authorization: Bearer <metrics token or admin API key>'", invalid_token=False
            )
        if _is_metrics_token(credentials.credentials, settings):
            return
        key = find_active_key(session, credentials.credentials)
        if key is None:
            raise UnauthorizedError("Invalid metrics token or API key", invalid_token=True)
        if not key.is_admin:
            raise ProblemError(
                403,
                "GET /metrics shows every tenant's jobs: it needs the metrics token or an admin API key",
                slug="forbidden",
            )

    return require_operator
