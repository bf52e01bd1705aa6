"""The FastAPI application factory: routers, problem+json errors and settings wiring.

`uvicorn service.main:app` serves the default app; tests and embedders call
`create_app(settings)` to run one against a given database, broker and artifact store.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import ASGIApp

from service.api.routes import (
    checkpoints,
    config,
    datasets,
    health,
    jobs,
    keys,
    quotas,
    rewards,
    streams,
    tenants,
    usage,
    webhooks,
)
from service.body_limit import BodySizeLimit
from service.dashboard import mount_dashboard
from service.errors import install_problem_handlers
from service.inflight_limit import InflightLimit
from service.keep_alive import KeepAliveAfterAnsweredErrors
from service.prometheus import install_metrics
from service.settings import Settings, get_settings

DESCRIPTION = """Reinforcement finetuning of language models with ReMix (mix-policy proximal policy gradient,
KL-Convex constraint, policy reincarnation). Submit a job, follow its metrics and events (JSON or
Server-Sent Events), download its checkpoints. Errors are RFC 9457 `application/problem+json`."""


class RemixAPI(FastAPI):
    """FastAPI with one more layer outside Starlette's server-error middleware, which re-raises
    every exception it answered with a 500: without this, each such 500 also closes the connection."""

    def build_middleware_stack(self) -> ASGIApp:
        return KeepAliveAfterAnsweredErrors(super().build_middleware_stack())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; `settings` (if given) replaces the environment-derived settings."""
    effective = settings or get_settings()
    app = RemixAPI(
        title="ReMix finetuning service",
        version="0.1.0",
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = effective
    app.state.db_retry_after_seconds = effective.db_retry_after_seconds
    install_problem_handlers(app)
    routers = (jobs, usage, streams, checkpoints, datasets, config, rewards, tenants, quotas, keys, webhooks, health)
    for module in routers:
        app.include_router(module.router)
    # Observability and UI: Prometheus /metrics (+ request middleware) and the static dashboard.
    install_metrics(app, effective)
    # Admission before any thread or connection is taken, then (outermost) the body-size cap.
    app.add_middleware(InflightLimit)
    app.add_middleware(BodySizeLimit)
    mount_dashboard(app)
    logging.getLogger("service").setLevel(logging.INFO)
    return app


app = create_app()
