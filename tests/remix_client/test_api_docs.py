"""docs/api.md is generated from the app's OpenAPI schema and must be kept up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", REPO_ROOT / "scripts" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_docs_are_up_to_date() -> None:
    generator = _generator()
    expected = generator.render(generator.current_spec())
    assert (REPO_ROOT / "docs" / "api.md").read_text() == expected, "run: python scripts/gen_api_docs.py"


def test_api_docs_cover_every_operation_and_schema() -> None:
    generator = _generator()
    spec = generator.current_spec()
    text = generator.render(spec)
    for path, item in spec["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in text
    assert "| `Idempotency-Key` | header |" in text
    assert "| `limit` | query | integer | no | >= 1, <= 100, default `20` |" in text
