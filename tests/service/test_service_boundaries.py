"""The API process stays light: no torch, no worker code, only the config/data engine modules; and a
job's state changes have one implementation, in service/lifecycle, which the API, worker and reaper share."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY_PACKAGES = ("torch", "transformers", "worker")
PROBE = f"""
import importlib, sys
importlib.import_module(sys.argv[1])
print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_PACKAGES!r})))
"""


def service_modules() -> list[str]:
    """Every module of the service package, found by walking its folders (new modules are covered too)."""
    import service

    found = ["service"]
    for info in pkgutil.walk_packages(service.__path__, prefix="service."):
        found.append(info.name)
    return sorted(found)


def _heavy_imports_of(module: str) -> str:
    # A fresh interpreter per module: one module's imports must not hide behind another's.
    result = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr[-3000:]}"
    return result.stdout.strip()


def test_no_service_module_imports_torch_transformers_or_worker() -> None:
    modules = service_modules()
    assert {"service.main", "service.cli", "service.queue", "service.lifecycle", "service.api.routes.jobs"} <= set(
        modules
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        heavy = dict(zip(modules, pool.map(_heavy_imports_of, modules), strict=True))
    assert {module: loaded for module, loaded in heavy.items() if loaded} == {}


def test_no_service_source_imports_the_worker_even_lazily() -> None:
    """Imports inside functions escape the probe above until they run: read every file instead."""
    lazy = sorted(
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in (REPO_ROOT / "service").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        if name.split(".")[0] in HEAVY_PACKAGES
    )
    assert lazy == []


JOB_TABLES = "Job|JobAttempt|JobEvent|JobMetric|Checkpoint"
# A new row of a job table, or an UPDATE / INSERT / DELETE / upsert of one.
JOB_WRITE = re.compile(
    rf"(?<!class )\b(?:{JOB_TABLES})\("
    rf"|\b(?:update|insert|delete)\((?:{JOB_TABLES})\b"
    rf"|\bupsert\(\w+, (?:{JOB_TABLES})\b"
)


def test_only_the_lifecycle_changes_job_state() -> None:
    writers = sorted(
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for package in ("service", "worker", "remix_engine")
        for path in (REPO_ROOT / package).rglob("*.py")
        if (REPO_ROOT / "service" / "lifecycle") not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if JOB_WRITE.search(line)
    )
    assert writers == []
    assert (REPO_ROOT / "service" / "lifecycle" / "attempt.py").read_text().count("update(Job)") >= 2  # it sees them


def test_prod_refuses_embedded_defaults() -> None:
    with pytest.raises(ValueError, match="REMIX_DATABASE_URL must point at a server database"):
        Settings(env="prod")
    with pytest.raises(ValueError, match="REMIX_BROKER_URL must point at Redis or RabbitMQ"):
        Settings(env="prod", database_url="postgresql+psycopg://db/remix")
    assert (
        Settings(env="prod", database_url="postgresql+psycopg://db/remix", broker_url="redis://r:6379/0").env == "prod"
    )


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMIX_TASK_QUEUE", "gpu-a100")
    monkeypatch.setenv("REMIX_MAX_UPLOAD_BYTES", "1234")
    settings = Settings()
    assert (settings.task_queue, settings.max_upload_bytes) == ("gpu-a100", 1234)
