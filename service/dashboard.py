"""The web dashboard: static HTML/JS/CSS under service/static/, served by the API at /dashboard.

No build step and no CDN: the page is plain ES modules plus a vendored chart library (uPlot),
so it works offline. It calls the public JSON API with the API key the user enters (kept in
sessionStorage) and reads live updates from the SSE stream with fetch(), which, unlike
EventSource, can send the Authorization header: the server needs no extra authentication path.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
DASHBOARD_PATH = "/dashboard"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at /dashboard/ and redirect / to it."""
    app.mount(DASHBOARD_PATH, StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{DASHBOARD_PATH}/", status_code=307)
