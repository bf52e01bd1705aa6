"""The client installs alone: importing it (and its CLI) loads neither the service, the worker,
the training engine nor torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_client_imports_no_server_code() -> None:
    code = (
        "import sys, remix_client, remix_client.cli\n"
        "server = {'service', 'worker', 'remix_engine', 'torch'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
