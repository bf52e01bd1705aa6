"""The API process stays light: no torch, no worker code, only the config/data engine modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.settings import Settings

PROBE = """
import sys
import service.main, service.cli, service.queue
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'worker'))
print(','.join(heavy))
"""


def test_api_imports_neither_torch_nor_worker() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


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
