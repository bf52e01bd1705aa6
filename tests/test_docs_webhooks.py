"""The signature-verification recipe of docs/webhooks.md accepts what the service sends and refuses
a tampered body, a wrong secret and an old timestamp."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from service.webhooks.signing import new_secret, signed_headers

REPO_ROOT = Path(__file__).resolve().parents[1]


def _recipe() -> Any:
    text = (REPO_ROOT / "docs" / "webhooks.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    return namespace["verify"]


def test_the_documented_recipe_verifies_the_services_signature() -> None:
    verify = _recipe()
    secret, body = new_secret(), b'{"type":"job.succeeded","timestamp":"2026-12-01T13:00:00Z","data":{}}'
    now = int(time.time())
    headers = signed_headers(secret, "msg_1", now, body)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(new_secret(), headers, body)
    stale = signed_headers(secret, "msg_1", now - 3600, body)
    assert not verify(secret, stale, body)
