"""The API process stays light: no torch, no worker code, only the config/data engine modules; and a
job's state changes have one implementation, in service/lifecycle, which the API, worker and reaper share."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

PROBE = """
import sys
import service.main, service.cli, service.queue, service.lifecycle
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'worker'))
print(','.join(heavy))
"""


def test_api_imports_neither_torch_nor_worker() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


REPO_ROOT = Path(__file__).resolve().parents[2]
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
