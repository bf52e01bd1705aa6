"""docs/reliability.md cites tests by node id; every cited test must exist, so the table cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def test_every_cited_test_exists() -> None:
    text = (REPO_ROOT / "docs" / "reliability.md").read_text()
    cited = NODE_ID.findall(text)
    assert len(cited) >= 40, "the reliability table should cite its tests by node id"
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if not (REPO_ROOT / path).is_file()
        or not re.search(rf"^(async )?def {name}\(", (REPO_ROOT / path).read_text(), re.M)
    ]
    assert missing == []
