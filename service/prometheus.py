"""Prometheus metrics of the API at GET /metrics: HTTP traffic, job states, queue depth, worker progress.

Only the operator reads them (the metrics token or an admin API key, see `service.metrics_auth`):
they cover every tenant.

Request counts and latencies are recorded by an ASGI middleware, labelled by route *template*
(`/v1/jobs/{job_id}`), never by raw path, so the number of series stays bounded. Everything else is
computed at scrape time by `ServiceStateCollector` from the database and the broker, so one scrape
of the API also covers the workers: they are separate processes, but they write each step's
`step_s` / `gen_tokens_per_s` into job_metrics, which the collector reads for the active jobs.

Each app gets its own `CollectorRegistry` (tests build several apps in one process). The collector
never raises: an unreachable database or broker shows as `remix_scrape_source_up{source=...} 0`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import session_factory
from service.metrics_auth import metrics_access
from service.models import JOB_STATUSES, Job, JobMetric, JobStatus
from service.settings import Settings

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.running.value, JobStatus.cancelling.value, JobStatus.pausing.value)
# Worker metrics exported per active job: (job_metrics key, metric name, help).
WORKER_GAUGES = (
    ("step_s", "remix_worker_step_seconds", "Wall time of the job's last training step."),
    ("gen_tokens_per_s", "remix_worker_gen_tokens_per_second", "Rollout tokens/s of the last step."),
    ("learner_tokens_per_s", "remix_worker_learner_tokens_per_second", "Learner tokens/s of the last step."),
)
UNMATCHED = "unmatched"


class HttpMetrics:
    """The request counter and latency histogram of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "remix_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        # Latency is time to the response start: an SSE stream would otherwise count its whole life.
        self.latency = Histogram(
            "remix_http_request_duration_seconds",
            "Time from request to response start, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


def route_template(app: FastAPI, scope: Scope) -> str:
    """`/v1/jobs/{job_id}` for a matched route, the mount path for static files, else 'unmatched'."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    for candidate in app.router.routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


class RequestMetricsMiddleware:
    """Pure ASGI middleware (unlike BaseHTTPMiddleware it leaves streaming and disconnects alone)."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI, metrics: HttpMetrics) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                route = route_template(self.fastapi_app, scope)
                self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        except Exception:
            record(500)  # the server error middleware outside us turns it into a 500
            raise


class ServiceStateCollector(Collector):
    """Scrape-time gauges from the database (jobs, worker progress) and the broker (queue depth)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis: redis.Redis | None = None

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time: that would query the database on import

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("remix_scrape_source_up", "1 if the source answered this scrape.", labels=["source"])
        try:
            yield from self._database_metrics()
            up.add_metric(["database"], 1)
        except Exception as exc:  # a scrape reports failure, it never fails
            log.warning("metrics: database unavailable: %s", exc)
            up.add_metric(["database"], 0)
        if self._uses_redis:
            try:
                yield self._queue_depth()
                up.add_metric(["broker"], 1)
            except Exception as exc:
                log.warning("metrics: broker unavailable: %s", exc)
                up.add_metric(["broker"], 0)
        yield up

    # ------------------------------------------------------------------ database
    def _database_metrics(self) -> list[Metric]:
        with session_factory(self.settings.database_url)() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            steps = session.scalar(select(func.count()).select_from(JobMetric)) or 0
            active = session.execute(_active_jobs_query()).all()
        jobs = GaugeMetricFamily("remix_jobs", "Jobs by state.", labels=["state"])
        for state in JOB_STATUSES:
            jobs.add_metric([state], counts.get(state, 0))
        total = CounterMetricFamily(
            "remix_training_steps", "Training steps recorded by workers (job_metrics rows).", value=steps
        )
        return [jobs, total, *_worker_metrics(active)]

    # ------------------------------------------------------------------ broker
    @property
    def _uses_redis(self) -> bool:
        return self.settings.broker_url.startswith(("redis://", "rediss://"))

    def _queue_depth(self) -> Metric:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
        queue = self.settings.task_queue
        depth = GaugeMetricFamily("remix_queue_depth", "Tasks waiting in the broker queue.", labels=["queue"])
        # Celery's Redis transport keeps a queue as a list named after it.
        depth.add_metric([queue], float(self._redis.llen(queue)))
        return depth


def _active_jobs_query() -> Any:
    """Running/cancelling/pausing jobs with the metrics of their latest recorded step (if any)."""
    last = (
        select(JobMetric.job_id, func.max(JobMetric.step).label("step"))
        .join(Job, Job.id == JobMetric.job_id)
        .where(Job.status.in_(ACTIVE))
        .group_by(JobMetric.job_id)
        .subquery()
    )
    return (
        select(Job.id, Job.worker_id, Job.current_step, Job.total_steps, Job.heartbeat_at, JobMetric.metrics)
        .outerjoin(last, last.c.job_id == Job.id)
        .outerjoin(JobMetric, and_(JobMetric.job_id == last.c.job_id, JobMetric.step == last.c.step))
        .where(Job.status.in_(ACTIVE))
    )


def _worker_metrics(active: Sequence[Any]) -> list[Metric]:
    labels = ["job_id", "worker_id"]
    step = GaugeMetricFamily("remix_job_current_step", "Current step of an active job.", labels=labels)
    total = GaugeMetricFamily("remix_job_total_steps", "Total steps of an active job.", labels=labels)
    heartbeat = GaugeMetricFamily(
        "remix_worker_heartbeat_age_seconds", "Seconds since the active job's last heartbeat.", labels=labels
    )
    gauges = {key: GaugeMetricFamily(name, doc, labels=labels) for key, name, doc in WORKER_GAUGES}
    now = datetime.now(UTC)
    for job_id, worker_id, current_step, total_steps, heartbeat_at, metrics in active:
        values = [str(job_id), worker_id or ""]
        step.add_metric(values, current_step)
        total.add_metric(values, total_steps)
        if heartbeat_at is not None:
            beat = heartbeat_at if heartbeat_at.tzinfo else heartbeat_at.replace(tzinfo=UTC)
            heartbeat.add_metric(values, max((now - beat).total_seconds(), 0.0))
        for key, gauge in gauges.items():
            value = (metrics or {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                gauge.add_metric(values, float(value))
    return [step, total, heartbeat, *gauges.values()]


def install_metrics(app: FastAPI, settings: Settings) -> CollectorRegistry:
    """Add the request middleware, the state collector and GET /metrics to `app`."""
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    registry.register(ServiceStateCollector(settings))
    app.add_middleware(RequestMetricsMiddleware, fastapi_app=app, metrics=http_metrics)

    # Synchronous on purpose: FastAPI runs it in a thread, so the DB queries do not block the loop.
    # Operators only: the metrics cover every tenant (service/metrics_auth.py).
    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access(settings))])
    def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics_registry = registry
    return registry
