"""Liveness (/healthz) and readiness (/readyz: database and broker reachable) probes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from service.api.deps import SettingsDep
from service.db import get_engine
from service.errors import ProblemError
from service.queue import check_broker
from service.schemas import HealthStatus
from service.settings import Settings

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
PROBE_TIMEOUT = 5.0


@router.get("/healthz")
def healthz() -> HealthStatus:
    """The process is up (no dependency is checked)."""
    return HealthStatus(status="ok")


def _check_database(settings: Settings) -> None:
    with get_engine(settings.database_url).connect() as conn:
        conn.execute(text("SELECT 1"))


async def _probe(name: str, fn: Callable[[Settings], object], settings: Settings) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(fn, settings), PROBE_TIMEOUT)
    except Exception as exc:  # a probe reports any failure, it never raises
        log.warning("readiness: %s unavailable: %s", name, exc)
        return "unavailable"
    return "ok"


@router.get("/readyz", responses={503: {"content": {"application/problem+json": {}}}})
async def readyz(*, settings: SettingsDep) -> HealthStatus:
    """Ready to serve: the database answers and the broker accepts connections (else 503)."""
    checks = {
        "database": await _probe("database", _check_database, settings),
        "broker": await _probe("broker", check_broker, settings),
    }
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if failing:
        raise ProblemError(
            503,
            "not ready: " + ", ".join(failing) + " unavailable",
            slug="not-ready",
            headers={"Retry-After": "5"},
            checks=checks,
        )
    return HealthStatus(status="ok", checks=checks)
